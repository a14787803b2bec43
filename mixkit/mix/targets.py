"""Soft targets and the pairing arithmetic shared by every mixing method.

Targets follow timm's ``mixup_target`` (same smoothing values, same ``flip(0)`` partner convention,
bit-identical results), generalised to any partner index.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Lam", "flip_lam", "lam_weights", "mix_inputs", "pair_with", "smoothed_targets", "soft_targets", "to_device",
           "weighted_targets"]

Lam = float | torch.Tensor


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


def lam_weights(lam: Lam, like: torch.Tensor) -> float | torch.Tensor:
    """lam as a float, or a per-sample tensor shaped to broadcast over ``like`` in ``like``'s dtype.

    The dtype cast matters under autocast: a float32 lam would promote bf16 features to float32.
    """
    if not isinstance(lam, torch.Tensor):
        return float(lam)
    if lam.numel() != like.shape[0]:
        raise ValueError(f"lam has {lam.numel()} values for a batch of {like.shape[0]}")
    return lam.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def mix_inputs(x: torch.Tensor, lam: Lam, partner: torch.Tensor | None = None) -> torch.Tensor:
    """Plain mixup of a batch with its partners, out of place: lam * x + (1 - lam) * x[partner].

    ``partner`` None is timm's pairing, ``x.flip(0)``.
    """
    w = lam_weights(lam, x)
    return x * w + pair_with(x, partner) * (1 - w)


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
    y1 = smoothed_targets(target, num_classes=num_classes, label_smoothing=label_smoothing, multi_label=multi_label)
    return y1 * lam + pair_with(y1, partner) * (1.0 - lam)


def smoothed_targets(target: torch.Tensor, *, num_classes: int, label_smoothing: float,
                     multi_label: bool = False) -> torch.Tensor:
    """timm's smoothed one-hot targets (or smoothed multi-label targets), (B, num_classes) float32, unmixed."""
    if multi_label:
        return target.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing
    off_value = label_smoothing / num_classes
    on_value = 1.0 - label_smoothing + off_value
    classes = torch.arange(num_classes, device=target.device)
    return torch.where(target.long().unsqueeze(1) == classes, on_value, off_value).float()


def weighted_targets(target: torch.Tensor, weights: torch.Tensor, *, num_classes: int, label_smoothing: float,
                     multi_label: bool = False) -> torch.Tensor:
    """Soft targets of outputs that mix several inputs each: ``weights @ y`` over the smoothed targets ``y``.

    Args:
        target: (B,) class indices (or (B, num_classes) with ``multi_label``).
        weights: (B_out, B) label weights, rows summing to 1 (Co-Mixup's share of each input in each output).
        num_classes: Number of classes.
        label_smoothing: timm's label smoothing (of every input's target, so of the mixture too).
        multi_label: Dense multi-label targets.

    Returns:
        (B_out, num_classes) float32 soft targets on ``weights``' device.
    """
    y1 = smoothed_targets(target.to(weights.device), num_classes=num_classes, label_smoothing=label_smoothing,
                          multi_label=multi_label)
    return weights.float() @ y1
