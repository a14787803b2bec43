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

from .mix import MixupBase, create_mixup, get_mixup_class, list_mixups
from .mix.factory import check_mixup_arguments
from .mix.parts import add_part_param_groups, broadcast_parts, sync_part_gradients

__all__ = ["MixupArgumentError", "MixupMethod", "attach_parts", "check_timm_mixup", "create_timm_mixup", "extra_loss",
           "is_mixup_method", "method_kwargs", "mixup_active", "mixup_arg", "timm_mixup_args"]
PARTS_KEY = "mixkit_parts"  # the key of the parts' weights in the optimizer's state dict


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


def timm_mixup_args(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """The ``mixup_args`` dict timm's train.py builds from its flags (``mixkit-train`` has the same flags)."""
    return dict(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                label_smoothing=args.smoothing, num_classes=num_classes)


def mixup_active(mixup_args: Mapping[str, Any]) -> bool:
    """timm train.py's rule: mixing is on when the mixup alpha (or a method name) or CutMix is set."""
    return (mixup_args.get("mixup_alpha", 0.0) > 0 or mixup_args.get("cutmix_alpha", 0.0) > 0
            or mixup_args.get("cutmix_minmax") is not None)


def check_timm_mixup(mixup_args: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> None:
    """Everything ``create_timm_mixup`` checks before it needs the model: method settings with a number,
    settings the method does not take, CutMix with a method that does not cut. ``mixkit-train`` calls it
    before loading data; the errors name the flags.

    Raises:
        ValueError: The request cannot be built; the message starts with ``--mixup <value>``.
    """
    settings = dict(settings or {})
    alpha = mixup_args.get("mixup_alpha", 0.0)
    cutmix = mixup_args.get("cutmix_alpha", 0.0) or 0.0
    if (not is_mixup_method(alpha) and alpha < 0) or cutmix < 0:
        # timm's Mixup would treat a negative alpha as off, silently: a typo must not train without mixing.
        raise ValueError(f"--mixup {alpha} --cutmix {cutmix}: alphas must be >= 0 (0 turns that mixing off, as "
                         "in timm); pass a positive alpha or a method name")
    if not is_mixup_method(alpha):
        if settings:
            raise ValueError(
                f"--mixup {alpha}: method settings (--mixup-kwargs {sorted(settings)}) need a method name as "
                f"--mixup (one of {', '.join(list_mixups())}), not a number"
            )
        return
    name = str(alpha)
    kwargs = {**method_kwargs(mixup_args), **settings}
    try:
        check_mixup_arguments(name, kwargs)
        cls = get_mixup_class(name)
        if isinstance(cls, type) and issubclass(cls, MixupBase):
            cls.check_cutmix(kwargs.get("cutmix_alpha", 0.0), kwargs.get("cutmix_minmax"))
    except ValueError as err:  # say which flag led here: train.py users never called create_mixup
        raise ValueError(f"--mixup {name}: {err}") from err


def create_timm_mixup(
    model: nn.Module,
    mixup_args: Mapping[str, Any],
    args: argparse.Namespace | None = None,
    **settings: Any,
) -> Any:
    """train.py's ``mixup_fn``: timm's ``Mixup`` for a float alpha, the mixkit method for a name.

    The one path from ``--mixup`` to a mixing function: users' train.py and ``mixkit-train`` both call it.
    The method's hooks go on the model's own modules: DDP, ``torch.compile`` and EMA copies made before
    or after this call are handled by ``mixkit.create_mixup``, and parameter names do not change.

    Args:
        model: The model (wrapped or not).
        mixup_args: train.py's ``mixup_args`` dict (``timm_mixup_args``); ``mixup_alpha`` is ``args.mixup``.
        args: train.py's namespace. When given and ``args.mixup`` is a ``MixupMethod``, it is replaced
            by the plain name, so checkpoints that pickle ``args`` load with ``weights_only=True``
            (timm allows ``argparse.Namespace`` and plain values, not mixkit classes).
        **settings: The method's own settings (``input_prob``, ``solver``, ``eps``, ...); only with a
            method name.

    Returns:
        ``timm.data.Mixup(**mixup_args)`` for a number, else ``mixkit.create_mixup(name, model=model,
        **method_kwargs(mixup_args), **settings)``.

    Raises:
        ValueError: Method settings with a float alpha, or arguments the method rejects (the message
            starts with ``--mixup <value>``).
    """
    check_timm_mixup(mixup_args, settings)
    alpha = mixup_args.get("mixup_alpha", 0.0)
    if not is_mixup_method(alpha):
        return Mixup(**mixup_args)
    name = str(alpha)
    try:
        mixup_fn = create_mixup(name, model=model, **method_kwargs(mixup_args), **settings)
    except (ValueError, TypeError) as err:  # say which flag led here: train.py users never called create_mixup
        raise type(err)(f"--mixup {name}: {err}") from err
    if args is not None and isinstance(getattr(args, "mixup", None), MixupMethod):
        args.mixup = name
    return mixup_fn


def attach_parts(mixup_fn: Any, optimizer: Any) -> None:
    """train.py's line for methods with trainable parts, right after ``create_optimizer_v2``.

    train.py builds ``mixup_fn`` before its optimizer; this adds the method's parts (``extra_modules()``)
    before train.py's ``resume_checkpoint`` and lr scheduler, which then cover them:

    * moves the parts to the model's device, gives every process rank 0's parts (train.py seeds each rank
      differently; DDP does the same for the model) and adds them to ``optimizer`` with timm's weight-decay
      split (the weight decay of the optimizer's decayed groups);
    * averages their gradients across processes before every optimizer step (they are not in DDP: a step
      may leave them unused on one process; ``mixkit.mix.parts.sync_part_gradients``);
    * saves their weights with the optimizer's state (``optimizer.state_dict()["mixkit_parts"]``, which
      timm's CheckpointSaver writes beside the model's ``state_dict``, never inside it), and loads them back
      when ``resume_checkpoint`` loads the optimizer.

    A no-op for None, timm's Mixup and methods without parts.
    """
    parts = mixup_fn.extra_modules() if isinstance(mixup_fn, MixupBase) else {}
    if not parts:
        return
    if mixup_fn.model is None:
        raise ValueError(f"{mixup_fn.method} has trainable parts but holds no model to place them beside: create it "
                         "with create_timm_mixup(model, mixup_args, args)")
    device = next(iter(mixup_fn.model.parameters())).device
    for part in parts.values():
        part.to(device)
    broadcast_parts(parts)
    # timm puts the weight decay on the param groups (not in optimizer.defaults): the decayed groups' value.
    decay = max(float(group.get("weight_decay", 0.0)) for group in optimizer.param_groups)
    add_part_param_groups(optimizer, parts, weight_decay=decay)
    optimizer.register_step_pre_hook(lambda opt, *_: sync_part_gradients(parts))

    def save_parts(opt: Any, state: dict[str, Any]) -> dict[str, Any]:
        state[PARTS_KEY] = {key: part.state_dict() for key, part in parts.items()}
        return state

    def load_parts(opt: Any, state: dict[str, Any]) -> dict[str, Any]:
        state = dict(state)
        saved = state.pop(PARTS_KEY, None)
        if saved is None:
            raise ValueError(f"the checkpoint's optimizer state has no {PARTS_KEY!r}: it was not written with the "
                             f"parts of {mixup_fn.method} attached (mixkit.timm_compat.attach_parts); resume a run of "
                             "the same --mixup method, or start a new one")
        for key, part in parts.items():
            part.load_state_dict(saved[key])
        return state

    optimizer.register_state_dict_post_hook(save_parts)
    optimizer.register_load_state_dict_pre_hook(load_parts)


def extra_loss(mixup_fn: Any) -> Any:
    """train.py's second line for methods with parts: the method's extra loss term of the last training
    forward (0 for None, timm's Mixup, or a method without one), added to the classification loss."""
    term = mixup_fn.extra_loss() if isinstance(mixup_fn, MixupBase) else None
    return 0.0 if term is None else term
