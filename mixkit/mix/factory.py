"""``create_mixup(name, model=model, **kwargs)``: the mixing methods looked up by name.

Every method takes timm's Mixup arguments (mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob,
mode, correct_lam, label_smoothing, num_classes, multi_label), so timm's train.py can swap
``Mixup(**mixup_args)`` for ``create_mixup(name, model=model, **mixup_args)``.

Adding a method is one registration line below: a name, the class as ``"module:Class"`` (imported on first
use, so a method with heavy dependencies costs nothing until it is asked for) and its preset defaults.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..registry import Registry

__all__ = ["accepted_arguments", "check_mixup_arguments", "create_mixup", "get_mixup_class", "list_mixups", "mixup_preset",
           "register_mixup", "unregister_mixup"]


@dataclass
class _Entry:
    target: str | Callable[..., Any]  # the class, or "package.module:Class" until first use
    defaults: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> Callable[..., Any]:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target


_MIXUPS: Registry[_Entry] = Registry("mixup method")


def register_mixup(name: str, cls: str | Callable[..., Any], *, overwrite: bool = False, **defaults: Any) -> None:
    """Registers a mixing method under ``name``.

    Args:
        name: Lookup name for create_mixup.
        cls: Class (or factory) taking keyword arguments, ``model`` among them; or its import path
            ``"package.module:Class"``, imported on first use.
        overwrite: Replace an entry of the same name instead of raising.
        **defaults: Keyword defaults of this name, overridable by create_mixup's kwargs.

    Raises:
        ValueError: ``name`` is taken and ``overwrite`` is False.
    """
    _MIXUPS.register(name, _Entry(cls, dict(defaults)), overwrite=overwrite)


def unregister_mixup(name: str) -> None:
    """Removes a registered method (for plug-ins and tests that registered one temporarily)."""
    _MIXUPS.unregister(name)


def list_mixups() -> list[str]:
    """Names create_mixup accepts."""
    return _MIXUPS.list()


def get_mixup_class(name: str) -> Callable[..., Any]:
    """The class (or factory) registered as ``name``."""
    return _MIXUPS.get(name).resolve()


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


def check_mixup_arguments(name: str, kwargs: dict[str, Any]) -> None:
    """Refuses names the method ``name`` does not take, before anything is built.

    Raises:
        ValueError: Unknown method, or an argument it does not take (the message lists those it does).
    """
    accepted = accepted_arguments(get_mixup_class(name))
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        names = ", ".join(sorted(accepted - {"model"}))
        raise ValueError(f"create_mixup({name!r}) does not take {', '.join(unknown)}; it takes: {names}")


def create_mixup(name: str, *, model: nn.Module | None = None, **kwargs: Any) -> Any:
    """Creates a mixing function with timm's Mixup call contract: ``x, target = mixup_fn(x, target)``.

    Every mixing function is also a context manager: ``with create_mixup(...) as mix:`` takes its hooks
    off the model at the end of the block (``mix.remove()`` does the same).

    Args:
        name: A registered method (``list_mixups()``): 'mixup', 'cutmix', 'mixup_cutmix' (timm's Mixup),
            'manifold', 'alignmixup', 'alignmixup_paper', ...
        model: The model; required by the methods that mix inside it, checked against ``num_classes`` by all.
        **kwargs: Constructor arguments of the method (timm's Mixup names, plus the method's own).

    Returns:
        The mixing object; its ``mixup_enabled`` attribute turns mixing off (targets are still smoothed).

    Raises:
        ValueError: Unknown name, or an argument the method does not take (the message lists those it does).
    """
    check_mixup_arguments(name, kwargs)
    entry = _MIXUPS.get(name)
    return entry.resolve()(model=model, **{**entry.defaults, **kwargs})


# The methods. "mixup_cutmix" uses the DeiT / timm ImageNet recipe values (mixup 0.8, CutMix 1.0).
register_mixup("mixup", "mixkit.mix.input_mix:InputMixup", mixup_alpha=1.0, cutmix_alpha=0.0)
register_mixup("cutmix", "mixkit.mix.input_mix:InputMixup", mixup_alpha=0.0, cutmix_alpha=1.0)
register_mixup("mixup_cutmix", "mixkit.mix.input_mix:InputMixup", mixup_alpha=0.8, cutmix_alpha=1.0)
register_mixup("manifold", "mixkit.mix.manifold:ManifoldMixup")
register_mixup("alignmixup", "mixkit.mix.alignmixup:AlignMixup")
register_mixup("alignmixup_ae", "mixkit.mix.alignmixup_ae:AlignMixupAE")
register_mixup("comixup", "mixkit.mix.comixup:CoMixup")  # the authors' defaults are the class's
register_mixup("puzzlemix", "mixkit.mix.puzzlemix:PuzzleMix")  # the authors' defaults are the class's
register_mixup("saliencymix", "mixkit.mix.saliencymix:SaliencyMix")  # the authors' defaults are the class's
# The authors' behaviour (shashankvkt/AlignMixup_CVPR22), difference by difference: their solver (raw
# squared distances, eps 0.1, at most 100 log-domain iterations; every pair solved), their projection
# (plan times n, rows not normalised), their loss (no label smoothing) and their pairing (a random
# permutation per batch). docs/mixing.md says why mixkit's default differs in each.
register_mixup("alignmixup_paper", "mixkit.mix.alignmixup:AlignMixup", solver="reference",
               projection="scaled_plan", label_smoothing=0.0, pairing="random")
