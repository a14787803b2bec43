"""Soft targets and input checks shared by every mixing method.

Targets are built with timm's own ``timm.data.mixup.mixup_target`` so that label smoothing and the
partner convention (``flip(0)``: sample ``i`` pairs with ``B - 1 - i``) are exactly timm's.
"""

from __future__ import annotations

import numpy as np
import torch
from timm.data.mixup import mixup_target

__all__ = ["check_batch", "check_config", "check_targets", "flip_lam", "soft_targets"]

Lam = float | torch.Tensor


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
    if mode not in ("batch", "pair", "elem"):
        raise ValueError(f"mode must be 'batch', 'pair' or 'elem' (timm's Mixup modes), got {mode!r}")


def check_batch(x: torch.Tensor) -> int:
    """Checks the model input and returns the batch size.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: ``x`` has no batch dimension or an empty batch.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor batch, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (normalised images), got dtype {x.dtype}; convert it "
            "with x.float() (or normalise it) before mixing"
        )
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have a non-empty batch dimension, got shape {tuple(x.shape)}")
    return x.shape[0]


def check_targets(target: torch.Tensor, batch_size: int, num_classes: int, multi_label: bool = False) -> None:
    """Checks class-index targets (or dense multi-label targets) before they are mixed.

    timm's ``one_hot`` casts and reshapes whatever it is given, so float labels, a (B, 1) shape or a
    class index >= num_classes would otherwise mix silently into wrong targets (or hit a CUDA
    device-side assert far from the cause).

    Args:
        target: (B,) integer class indices, or (B, num_classes) floats when ``multi_label``.
        batch_size: The batch size of the input.
        num_classes: The classifier's number of classes.
        multi_label: Dense multi-label targets (timm's ``multi_label``).

    Raises:
        TypeError: Wrong type or dtype.
        ValueError: Wrong shape, or labels outside [0, num_classes).
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
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
    # One reduction and one host sync: cheap next to a training step, and it turns a CUDA device-side
    # assert inside scatter_ into a readable error.
    low, high = torch.stack([target.min(), target.max()]).tolist()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"target labels must be in [0, num_classes) = [0, {num_classes}), got min {low} and max {high}; "
            "set num_classes to the dataset's number of classes"
        )


def flip_lam(lam: np.ndarray) -> np.ndarray:
    """Per-sample lam for an odd batch: the middle sample pairs with itself and is left unmixed."""
    lam = np.array(lam, dtype=np.float32, copy=True)
    if len(lam) % 2 == 1:
        lam[len(lam) // 2] = 1.0
    return lam


def soft_targets(
    target: torch.Tensor,
    lam: Lam,
    *,
    num_classes: int,
    label_smoothing: float,
    multi_label: bool = False,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Smoothed one-hot targets mixed with their ``flip(0)`` partners: lam * y + (1 - lam) * y.flip(0).

    Args:
        target: (B,) class indices (or (B, num_classes) with ``multi_label``).
        lam: A float, or a (B,) / (B, 1) tensor of per-sample weights.
        num_classes: Number of classes.
        label_smoothing: timm's label smoothing.
        multi_label: Dense multi-label targets.
        device: Where the targets go (defaults to the target's device).

    Returns:
        (B, num_classes) float32 soft targets; each row sums to 1 for class-index targets.
    """
    if device is not None:
        target = target.to(device)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(device=target.device, dtype=torch.float32).reshape(-1, 1)
    if multi_label:  # keyword only when needed: timm releases before multi_label support lack it
        return mixup_target(target, num_classes, lam, label_smoothing, multi_label=True)
    return mixup_target(target, num_classes, lam, label_smoothing)
