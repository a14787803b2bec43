"""Argument and input checks shared by every mixing method: clear errors that name the fix.

The constructor arguments (timm's names), the (images, class indices) batch of a call, and the class
count against the model. Label *values* are checked by ``labels.LabelRangeCheck`` (no host sync on CUDA).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import unwrap_model

__all__ = [
    "check_batch",
    "check_choice",
    "check_config",
    "check_model_classes",
    "check_output_classes",
    "check_targets",
]


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
