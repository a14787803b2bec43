"""``create_mixup(name, model=model, **kwargs)``: the mixing methods looked up by name.

Every method takes timm's Mixup arguments (mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob,
mode, correct_lam, label_smoothing, num_classes), so timm's train.py can swap ``Mixup(**mixup_args)``
for ``create_mixup(name, model=model, **mixup_args)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .alignmixup import AlignMixup
from .input_mix import InputMixup
from .manifold import ManifoldMixup

__all__ = ["create_mixup", "list_mixups", "register_mixup"]


@dataclass(frozen=True)
class _Entry:
    cls: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {}


def register_mixup(name: str, cls: Callable[..., Any], **defaults: Any) -> None:
    """Registers a mixing method under ``name``.

    Args:
        name: Lookup name for create_mixup.
        cls: Class (or factory) taking keyword arguments, ``model`` among them.
        **defaults: Keyword defaults of this name, overridable by create_mixup's kwargs.
    """
    if name in _REGISTRY:
        raise ValueError(f"a mixup method called {name!r} is already registered")
    _REGISTRY[name] = _Entry(cls, dict(defaults))


def list_mixups() -> list[str]:
    """Names create_mixup accepts."""
    return sorted(_REGISTRY)


def create_mixup(name: str, *, model: nn.Module | None = None, **kwargs: Any) -> Any:
    """Creates a mixing function with timm's Mixup call contract: ``x, target = mixup_fn(x, target)``.

    Args:
        name: 'mixup', 'cutmix', 'mixup_cutmix' (timm's Mixup), 'manifold' or 'alignmixup'
            (see ``list_mixups()``).
        model: The model; required by the feature-space methods, ignored by the input ones.
        **kwargs: Constructor arguments of the method (timm's Mixup names, plus the method's own).

    Returns:
        The mixing object; its ``mixup_enabled`` attribute turns mixing off (targets are still smoothed).

    Raises:
        ValueError: Unknown name, or an argument the method does not take (the message lists those it does).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown mixup method {name!r}; available: {', '.join(list_mixups())}")
    entry = _REGISTRY[name]
    params = inspect.signature(entry.cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            accepted = ", ".join(n for n in params if n != "model")
            raise ValueError(f"create_mixup({name!r}) does not take {', '.join(unknown)}; it takes: {accepted}")
    return entry.cls(model=model, **{**entry.defaults, **kwargs})


# Presets. "mixup_cutmix" uses the DeiT / timm ImageNet recipe values (mixup 0.8, CutMix 1.0).
register_mixup("mixup", InputMixup, mixup_alpha=1.0, cutmix_alpha=0.0)
register_mixup("cutmix", InputMixup, mixup_alpha=0.0, cutmix_alpha=1.0)
register_mixup("mixup_cutmix", InputMixup, mixup_alpha=0.8, cutmix_alpha=1.0)
register_mixup("manifold", ManifoldMixup)
register_mixup("alignmixup", AlignMixup)
