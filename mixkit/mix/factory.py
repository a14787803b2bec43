"""``create_mixup(name, model=model, **kwargs)``: the mixing methods looked up by name.

Every method takes timm's Mixup arguments (mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob,
mode, correct_lam, label_smoothing, num_classes, multi_label), so timm's train.py can swap
``Mixup(**mixup_args)`` for ``create_mixup(name, model=model, **mixup_args)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..registry import Registry
from .alignmixup import AlignMixup
from .input_mix import InputMixup
from .manifold import ManifoldMixup

__all__ = ["accepted_arguments", "create_mixup", "list_mixups", "mixup_preset", "register_mixup"]


@dataclass(frozen=True)
class _Entry:
    cls: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)


_MIXUPS: Registry[_Entry] = Registry("mixup method")


def register_mixup(name: str, cls: Callable[..., Any], *, overwrite: bool = False, **defaults: Any) -> None:
    """Registers a mixing method under ``name``.

    Args:
        name: Lookup name for create_mixup.
        cls: Class (or factory) taking keyword arguments, ``model`` among them.
        overwrite: Replace an entry of the same name instead of raising.
        **defaults: Keyword defaults of this name, overridable by create_mixup's kwargs.

    Raises:
        ValueError: ``name`` is taken and ``overwrite`` is False.
    """
    _MIXUPS.register(name, _Entry(cls, dict(defaults)), overwrite=overwrite)


def list_mixups() -> list[str]:
    """Names create_mixup accepts."""
    return _MIXUPS.list()


def mixup_preset(name: str) -> dict[str, Any]:
    """The keyword defaults registered with ``name`` (a copy), e.g. ``{'label_smoothing': 0.0, ...}`` for
    'alignmixup_paper'; create_mixup's own kwargs override them."""
    return dict(_MIXUPS.get(name).defaults)


def accepted_arguments(cls: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``cls`` accepts: for a class, those of every ``__init__`` along its MRO (subclasses
    forward ``**kwargs`` to their bases); None when a plain function takes ``**kwargs`` (anything goes)."""
    if not isinstance(cls, type):
        params = inspect.signature(cls).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params}
    names: set[str] = set()
    for klass in cls.__mro__[:-1]:  # object's __init__ takes nothing
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        names.update(
            p.name for p in list(inspect.signature(init).parameters.values())[1:]
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        )
    return names


def create_mixup(name: str, *, model: nn.Module | None = None, **kwargs: Any) -> Any:
    """Creates a mixing function with timm's Mixup call contract: ``x, target = mixup_fn(x, target)``.

    Every mixing function is also a context manager: ``with create_mixup(...) as mix:`` takes its hooks
    off the model at the end of the block (``mix.remove()`` does the same).

    Args:
        name: 'mixup', 'cutmix', 'mixup_cutmix' (timm's Mixup), 'manifold', 'alignmixup' or
            'alignmixup_paper' (see ``list_mixups()``).
        model: The model; required by the feature-space methods, checked against ``num_classes`` by all.
        **kwargs: Constructor arguments of the method (timm's Mixup names, plus the method's own).

    Returns:
        The mixing object; its ``mixup_enabled`` attribute turns mixing off (targets are still smoothed).

    Raises:
        ValueError: Unknown name, or an argument the method does not take (the message lists those it does).
    """
    entry = _MIXUPS.get(name)
    accepted = accepted_arguments(entry.cls)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            names = ", ".join(sorted(accepted - {"model"}))
            raise ValueError(f"create_mixup({name!r}) does not take {', '.join(unknown)}; it takes: {names}")
    return entry.cls(model=model, **{**entry.defaults, **kwargs})


# Presets. "mixup_cutmix" uses the DeiT / timm ImageNet recipe values (mixup 0.8, CutMix 1.0).
register_mixup("mixup", InputMixup, mixup_alpha=1.0, cutmix_alpha=0.0)
register_mixup("cutmix", InputMixup, mixup_alpha=0.0, cutmix_alpha=1.0)
register_mixup("mixup_cutmix", InputMixup, mixup_alpha=0.8, cutmix_alpha=1.0)
register_mixup("manifold", ManifoldMixup)
register_mixup("alignmixup", AlignMixup)
# The authors' behaviour (shashankvkt/AlignMixup_CVPR22), difference by difference: their solver (raw
# squared distances, eps 0.1, at most 100 log-domain iterations; every pair solved), their projection
# (plan times n, rows not normalised), their loss (no label smoothing) and their pairing (a random
# permutation per batch). docs/mixing.md says why mixkit's default differs in each.
register_mixup(
    "alignmixup_paper", AlignMixup, solver="reference", projection="scaled_plan", label_smoothing=0.0,
    pairing="random",
)
