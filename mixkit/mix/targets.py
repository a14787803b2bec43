"""Soft targets and input checks shared by every mixing method.

Targets follow timm's ``mixup_target`` (same smoothing values, same ``flip(0)`` partner convention,
bit-identical results), generalised to any partner index. The class-index range check does not
synchronise the host on CUDA (``LabelRangeCheck``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .layers import unwrap_model

__all__ = [
    "LabelRangeCheck",
    "check_batch",
    "check_choice",
    "check_config",
    "check_model_classes",
    "check_output_classes",
    "check_targets",
    "flip_lam",
    "pair_with",
    "soft_targets",
    "to_device",
]

Lam = float | torch.Tensor


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raises ValueError naming the argument and its choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_config(*, num_classes: int, label_smoothing: float, prob: float, mode: str) -> None:
    """Checks the constructor arguments every method shares (timm's names).

    Raises:
        ValueError: An argument is out of range; the message says which and the valid range.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (the classifier's output size), got {num_classes!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob (probability of mixing a batch/element) must be in [0, 1], got {prob!r}")
    check_choice("mode (timm's Mixup modes)", mode, ("batch", "pair", "elem"))


def check_model_classes(model: nn.Module | None, num_classes: int) -> bool:
    """Checks ``num_classes`` against a model that says its own (timm's ``num_classes`` attribute).

    Returns:
        Whether the model says its class count (False: only its first output can tell).

    Raises:
        ValueError: They differ (the loss would fail later with a size mismatch, far from the cause).
    """
    own = getattr(unwrap_model(model), "num_classes", None) if isinstance(model, nn.Module) else None
    if not (isinstance(own, int) and not isinstance(own, bool) and own > 0):
        return False
    if own != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but the model has {own} outputs: pass num_classes={own} to create_mixup "
            "(the soft targets must have the classifier's size)"
        )
    return True


def check_output_classes(output: torch.Tensor, num_classes: int) -> None:
    """Checks a model's (B, K) output against ``num_classes`` at its first training forward.

    Raises:
        ValueError: K differs, naming the value to pass.
    """
    if output.shape[1] != num_classes:
        raise ValueError(
            f"the model outputs {output.shape[1]} classes but the mixing function was created with "
            f"num_classes={num_classes}: pass num_classes={output.shape[1]} to create_mixup"
        )


class ClassCountCheck:
    """A one-shot forward hook: the first training forward's (B, K) output must have K == ``num_classes``.

    For models that do not say their class count (no ``num_classes`` attribute), so a wrong
    ``num_classes`` (timm's 1000 default with a 10-class model) is named at the first forward rather than
    failing later inside the loss. It removes itself after that forward; it pickles and deep-copies with
    the model.
    """

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        self.num_classes = num_classes
        self.handle = model.register_forward_hook(self)

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        if not (module.training and isinstance(output, torch.Tensor) and output.ndim == 2):
            return
        self.handle.remove()
        check_output_classes(output, self.num_classes)


def watch_model_classes(model: nn.Module | None, num_classes: int) -> ClassCountCheck | None:
    """``check_model_classes`` now, and a ``ClassCountCheck`` on the model when it does not say its count."""
    if not isinstance(model, nn.Module) or check_model_classes(model, num_classes):
        return None
    return ClassCountCheck(unwrap_model(model), num_classes)


def check_batch(x: torch.Tensor) -> int:
    """Checks the model input, a (B, C, H, W) image batch, and returns the batch size.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: ``x`` is not 4-d, has an empty batch, or is on the meta device (no data).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor batch, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(
            "x is on the meta device (shapes only, no data), so it cannot be mixed; move the batch to a real "
            "device (e.g. x.to('cuda')) or materialise it"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (normalised images), got dtype {x.dtype}; convert it "
            "with x.float() (or normalise it) before mixing"
        )
    if x.ndim != 4:
        raise ValueError(
            f"x must be a (B, C, H, W) image batch, got shape {tuple(x.shape)}; add the missing dimension "
            "(x.unsqueeze(0) for one image, x.unsqueeze(1) for single-channel images without a channel axis)"
        )
    if x.shape[0] < 1:
        raise ValueError(f"x must have a non-empty batch dimension, got shape {tuple(x.shape)}")
    return x.shape[0]


def check_targets(target: torch.Tensor, batch_size: int, num_classes: int, multi_label: bool = False) -> None:
    """Checks the type and shape of class-index targets (or dense multi-label targets).

    The value range is checked by ``LabelRangeCheck``, which avoids a host sync on CUDA.

    Args:
        target: (B,) integer class indices, or (B, num_classes) floats when ``multi_label``.
        batch_size: The batch size of the input.
        num_classes: The classifier's number of classes.
        multi_label: Dense multi-label targets (timm's ``multi_label``).

    Raises:
        TypeError: Wrong type or dtype.
        ValueError: Wrong shape, or targets on the meta device.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_meta:
        raise ValueError("target is on the meta device (no data); pass the batch's real labels")
    if multi_label:
        if target.shape != (batch_size, num_classes):
            raise ValueError(
                f"multi_label targets must have shape (batch, num_classes) = ({batch_size}, {num_classes}), "
                f"got {tuple(target.shape)}"
            )
        return
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must hold integer class indices (torch.long), got dtype {target.dtype}; pass the "
            "dataset's class indices, not one-hot or already-mixed targets (for dense multi-label targets "
            "use multi_label=True)"
        )
    if target.shape != (batch_size,):
        raise ValueError(
            f"target must have shape (batch,) = ({batch_size},) to match x, got {tuple(target.shape)}; "
            "squeeze extra dimensions or check that x and target come from the same batch"
        )


def _range_error(low: int, high: int, num_classes: int, when: str) -> ValueError:
    return ValueError(
        f"target labels must be in [0, num_classes) = [0, {num_classes}), got min {low} and max {high}{when}; "
        "set num_classes to the dataset's number of classes"
    )


class LabelRangeCheck:
    """Checks that class indices lie in [0, num_classes) without synchronising the host on CUDA.

    On the CPU the check is immediate. On CUDA each batch's min and max are copied to pinned host memory
    asynchronously, and a later call reads them once an event says the copy has landed (``query()`` does
    not block): a bad batch raises at a later mixing call, at most a few steps late, or at ``flush()``.
    Meanwhile its labels give all-``off_value`` rows in the soft targets (never a device-side assert).

    Args:
        num_classes: The classifier's number of classes.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._step = 0
        self._pending: list[tuple[int, torch.cuda.Event, torch.Tensor]] = []

    def __call__(self, target: torch.Tensor) -> None:
        """Checks one batch of (B,) class indices (on CUDA: queues it and reports earlier batches)."""
        self._step += 1
        self._report(wait=False)
        if target.device.type != "cuda":
            low, high = (int(v) for v in torch.aminmax(target))
            if low < 0 or high >= self.num_classes:
                raise _range_error(low, high, self.num_classes, "")
            return
        host = torch.empty(2, dtype=target.dtype, pin_memory=True)
        host.copy_(torch.stack(torch.aminmax(target)), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((self._step, event, host))

    def flush(self) -> None:
        """Waits for the queued CUDA checks and raises for a bad batch among them."""
        self._report(wait=True)

    def _report(self, wait: bool) -> None:
        while self._pending and (wait or self._pending[0][1].query()):
            step, event, host = self._pending.pop(0)
            event.synchronize()
            low, high = host.tolist()
            if low < 0 or high >= self.num_classes:
                self._pending.clear()
                raise _range_error(low, high, self.num_classes, f" in the batch of mixing call {step}")


def flip_lam(lam: np.ndarray) -> np.ndarray:
    """Per-sample lam for an odd batch: the middle sample pairs with itself and is left unmixed."""
    lam = np.array(lam, dtype=np.float32, copy=True)
    if len(lam) % 2 == 1:
        lam[len(lam) // 2] = 1.0
    return lam


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A NumPy array on ``device``; to CUDA through pinned memory, so the copy does not block the host."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def pair_with(t: torch.Tensor, partner: torch.Tensor | None) -> torch.Tensor:
    """Each sample's partner: ``t.flip(0)`` (timm's pairing) or ``t[partner]`` for an index tensor."""
    return t.flip(0) if partner is None else t.index_select(0, partner.to(t.device))


def soft_targets(
    target: torch.Tensor,
    lam: Lam,
    *,
    num_classes: int,
    label_smoothing: float,
    multi_label: bool = False,
    partner: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Smoothed one-hot targets mixed with their partners: lam * y + (1 - lam) * y[partner].

    The values are timm's ``mixup_target`` (on ``1 - s + s / K``, off ``s / K``; multi-label
    ``y * (1 - s) + s / 2``) to the bit. The one-hot is built by comparison, not by timm's ``scatter_``,
    so an out-of-range label gives an all-off row instead of a CUDA device-side assert, and
    ``LabelRangeCheck`` can report it.

    Args:
        target: (B,) class indices (or (B, num_classes) with ``multi_label``).
        lam: A float, or a (B,) / (B, 1) tensor of per-sample weights.
        num_classes: Number of classes.
        label_smoothing: timm's label smoothing.
        multi_label: Dense multi-label targets.
        partner: (B,) partner indices; None is timm's ``flip(0)``.
        device: Where the targets go (defaults to the target's device).

    Returns:
        (B, num_classes) float32 soft targets; each row sums to 1 for class-index targets.
    """
    if device is not None:
        target = target.to(device)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(device=target.device, dtype=torch.float32).reshape(-1, 1)
    if multi_label:
        y1 = target.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing
    else:
        off_value = label_smoothing / num_classes
        on_value = 1.0 - label_smoothing + off_value
        classes = torch.arange(num_classes, device=target.device)
        y1 = torch.where(target.long().unsqueeze(1) == classes, on_value, off_value).float()
    return y1 * lam + pair_with(y1, partner) * (1.0 - lam)
