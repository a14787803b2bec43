"""Helpers for users' own copy of timm's train.py: ``--mixup alignmixup`` next to ``--mixup 0.8``.

``docs/timm_train_py.md`` holds the six-line patch that uses them. The pieces:

* ``mixup_arg``: the argparse ``type`` of ``--mixup``. A number keeps timm's meaning (a plain float
  alpha); a method name from ``mixkit.list_mixups()`` gives a ``MixupMethod``, a float subclass that
  compares > 0, so train.py's ``mixup_active = args.mixup > 0 or ...`` (and with it the
  ``SoftTargetCrossEntropy`` loss) works unchanged.
* ``is_mixup_method``: tells train.py not to build timm's ``FastCollateMixup`` for a method name, since
  feature-space methods must run next to the model, after the prefetcher has normalised the batch.
* ``create_timm_mixup``: timm's own ``Mixup(**mixup_args)`` for a float alpha, else the mixkit method
  built with ``mixkit.create_mixup`` from timm's ``mixup_args``, with its hooks on the model's modules
  (no wrapper module, so optimizer and layer-decay parameter names are unchanged).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import yaml
from timm.data import Mixup
from torch import nn

from .mix import create_mixup, list_mixups

__all__ = ["MixupArgumentError", "MixupMethod", "create_timm_mixup", "is_mixup_method", "method_kwargs",
           "mixup_arg"]


class MixupArgumentError(argparse.ArgumentTypeError, ValueError):
    """A ``--mixup`` value that is neither a number nor a mixing method name.

    An ``ArgumentTypeError`` so that argparse prints the message itself ("argument --mixup: ..."),
    and a ``ValueError`` for callers outside argparse.
    """


class MixupMethod(float):
    """A ``--mixup`` method name that still behaves like timm's float where train.py compares it.

    Its float value is 1.0 only so that ``args.mixup > 0`` is True: it is not an alpha (the method uses
    its own default, e.g. AlignMixup's 2.0). ``str()`` and YAML dumps give the name, so train.py's
    ``args.yaml`` reads back with ``-c``. It equals its name and other ``MixupMethod`` objects of the
    same name, never a number.

    Args:
        name: A name from ``mixkit.list_mixups()``.
    """

    __slots__ = ("name",)

    def __new__(cls, name: str) -> MixupMethod:
        self = super().__new__(cls, 1.0)
        self.name = name
        return self

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"MixupMethod({self.name!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MixupMethod):
            return self.name == other.name
        return isinstance(other, str) and self.name == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.name)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return MixupMethod, (self.name,)


def _represent_method(dumper: yaml.BaseDumper, data: MixupMethod) -> yaml.Node:
    return dumper.represent_str(data.name)


# train.py writes args.yaml with yaml.safe_dump(vars(args)), which refuses unknown types: teach the
# dumpers this one (as its name). Nothing else about them changes.
for _dumper in (yaml.SafeDumper, yaml.Dumper):
    _dumper.add_representer(MixupMethod, _represent_method)


def mixup_arg(value: str | float) -> float | MixupMethod:
    """The argparse ``type`` of ``--mixup``: a float alpha (timm's meaning) or a mixkit method name.

    Args:
        value: The command-line string (or a number, e.g. from a YAML config).

    Returns:
        ``float(value)`` when it is a number, unchanged from timm's ``type=float``; else a
        ``MixupMethod`` for a name in ``mixkit.list_mixups()`` (case-insensitive).

    Raises:
        MixupArgumentError: Neither a number nor a known method (the message lists the methods).
    """
    if isinstance(value, MixupMethod):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise MixupArgumentError(f"expected a number or a method name, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except ValueError:
        pass
    name = value.strip().lower()
    if name in list_mixups():
        return MixupMethod(name)
    raise MixupArgumentError(
        f"{value!r} is neither a mixup alpha (a number, timm's meaning) nor a mixkit method; "
        f"methods: {', '.join(list_mixups())}"
    )


def is_mixup_method(value: Any) -> bool:
    """True when a ``--mixup`` value names a mixkit method (a ``MixupMethod`` or a registered name)."""
    return isinstance(value, MixupMethod) or (isinstance(value, str) and value in list_mixups())


def method_kwargs(mixup_args: Mapping[str, Any]) -> dict[str, Any]:
    """``create_mixup`` keyword arguments for a method from timm train.py's ``mixup_args``.

    ``mixup_alpha`` (the method name) is dropped, so the method keeps its own default alpha. timm's
    CutMix settings are passed on only when set (``cutmix_alpha > 0``, ``cutmix_minmax``): the
    'cutmix' preset keeps its alpha of 1.0, and AlignMixup or manifold mixup with ``--cutmix`` raise
    a ValueError that names the fix. The other keys (``prob``, ``switch_prob``, ``mode``,
    ``label_smoothing``, ``num_classes``) pass through with timm's meaning.
    """
    kwargs = {key: value for key, value in mixup_args.items() if key != "mixup_alpha"}
    if not kwargs.get("cutmix_alpha"):
        kwargs.pop("cutmix_alpha", None)
    if kwargs.get("cutmix_minmax") is None:
        kwargs.pop("cutmix_minmax", None)
    return kwargs


def create_timm_mixup(
    model: nn.Module,
    mixup_args: Mapping[str, Any],
    args: argparse.Namespace | None = None,
    **settings: Any,
) -> Any:
    """train.py's ``mixup_fn``: timm's ``Mixup`` for a float alpha, the mixkit method for a name.

    The method's hooks go on the model's own modules: DDP, ``torch.compile`` and EMA copies made before
    or after this call are handled by ``mixkit.create_mixup``, and parameter names do not change.

    Args:
        model: The model (wrapped or not).
        mixup_args: train.py's ``mixup_args`` dict; ``mixup_alpha`` is ``args.mixup``.
        args: train.py's namespace. When given and ``args.mixup`` is a ``MixupMethod``, it is replaced
            by the plain name, so checkpoints that pickle ``args`` load with ``weights_only=True``
            (timm allows ``argparse.Namespace`` and plain values, not mixkit classes).
        **settings: The method's own settings (``input_prob``, ``solver``, ``eps``, ...); only with a
            method name.

    Returns:
        ``timm.data.Mixup(**mixup_args)`` for a number, else ``mixkit.create_mixup(name, model=model,
        **method_kwargs(mixup_args), **settings)``.

    Raises:
        ValueError: Method settings with a float alpha, or arguments the method rejects.
    """
    alpha = mixup_args.get("mixup_alpha", 0.0)
    if not is_mixup_method(alpha):
        if settings:
            raise ValueError(
                f"method settings {sorted(settings)} need a method name as mixup alpha "
                f"(one of {', '.join(list_mixups())}), got the number {alpha!r}"
            )
        return Mixup(**mixup_args)
    name = str(alpha)
    try:
        mixup_fn = create_mixup(name, model=model, **method_kwargs(mixup_args), **settings)
    except ValueError as err:  # say which flag led here: train.py users never called create_mixup
        raise ValueError(f"--mixup {name}: {err}") from err
    if args is not None and isinstance(getattr(args, "mixup", None), MixupMethod):
        args.mixup = name
    return mixup_fn
