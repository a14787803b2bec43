"""One registry rule for every family looked up by name (solvers, mixing methods, loader backends).

timm-style: ``register`` adds an entry (a duplicate name is an error unless ``overwrite=True``),
``list`` gives the sorted names, ``get`` returns the entry or raises a ValueError that lists the names
it knows, ``unregister`` removes one. Written by hand because timm's own registry is specific to models.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one family, looked up by name.

    Args:
        kind: What an entry is, for error messages ("OT solver", "mixup method", "loader backend").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Adds ``entry`` under ``name`` and returns it.

        Raises:
            TypeError: ``name`` is not a non-empty string.
            ValueError: ``name`` is taken and ``overwrite`` is False.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not overwrite:
            raise ValueError(f"a {self.kind} named {name!r} is already registered; "
                             f"pass overwrite=True to replace it")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Removes the entry ``name`` and returns it (for tests and plug-ins that registered it temporarily).

        Raises:
            ValueError: No entry has that name.
        """
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            TypeError: ``name`` is not a string.
            ValueError: No entry has that name (the message lists the known names).
        """
        if not isinstance(name, str):
            raise TypeError(f"a {self.kind} is looked up by its name (a string), got "
                            f"{type(name).__name__} {name!r}; available: {self.list()}")
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {self.list()}")
        return self._entries[name]

    def list(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)
