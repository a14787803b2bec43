"""``with create_mixup(...) as mix:``: every mixing function is a context manager that calls ``remove()``."""

from __future__ import annotations

from typing import Any

__all__ = ["MixupContext"]


class MixupContext:
    """Context-manager protocol of the mixing functions; ``remove()`` runs on exit, also on an error."""

    def remove(self) -> None:
        """Takes the method's hooks off the model (input-space methods have none)."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
