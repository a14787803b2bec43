"""Cost matrices between batched point sets, and the scale that gives eps its meaning.

Shifting every entry of a cost row (or column) by a constant leaves the optimal plan unchanged,
entropic or exact, because the marginals are fixed. Only the spread of the costs *within* a row
competes with eps. Distances between deep features concentrate (they are all close to their
mean), so dividing by the mean or the maximum leaves a tiny within-row spread and eps must be
very small to get a sharp plan. The default scale, "std", divides the cost by the standard
deviation of its double-centred entries (row and column means removed, the part of the cost the
plan actually sees), so eps is measured in units of that spread whatever the feature magnitude,
depth or concentration.

Exact under shifts and scales: both sets are divided by their largest magnitude and centred on the
first set's mean before the matmul, so ``|x|^2 + |y|^2 - 2 x y`` neither cancels (features far from the
origin) nor overflows or underflows (features of 1e18 or 1e-20) in fp32. Every scale but "none" is
homogeneous, so the scaled problem is solved as it is; only the raw cost multiplies the scale back.
"""

from __future__ import annotations

from typing import Literal

import torch

from .checks import check_finite, check_float_tensor, check_point_sets

CostScale = Literal["std", "max", "mean", "none"]
COST_SCALES: tuple[str, ...] = ("std", "max", "mean", "none")

NONFINITE_COST = ("{} contains NaN or Inf, or their squared distances overflow {}; check the features "
                  "(or pass fp64 features for a raw cost this large)")


def _standardised_points(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x and y divided by their largest magnitude, then centred on x's mean; and that magnitude (B, 1, 1).

    Distances between the returned sets are the original ones divided by the magnitude: the same plan
    under every homogeneous cost scale, with no cancellation, overflow or underflow in ``|x|^2``.
    """
    tiny = torch.finfo(x.dtype).tiny
    # abs().amax(): vector_norm(ord=inf) is about ten times slower on the CPU.
    s = torch.maximum(x.abs().amax(dim=(1, 2), keepdim=True), y.abs().amax(dim=(1, 2), keepdim=True)).clamp_min_(tiny)
    x, y = x / s, y / s
    # Any common shift leaves the distances alone. x's mean centres y as well as a common mean would:
    # where y lies far from x, its distances are large and the cancellation small anyway.
    centre = x.mean(dim=1, keepdim=True)
    return x - centre, y - centre, s


def _sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xx = x.pow(2).sum(-1, keepdim=True)
    yy = y.pow(2).sum(-1).unsqueeze(1)
    return torch.baddbmm(xx + yy, x, y.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)


def pairwise_cost(x: torch.Tensor, y: torch.Tensor, scale: CostScale = "std") -> torch.Tensor:
    """The scaled cost a solver sees, ``normalize_cost(squared_euclidean_cost(x, y), scale)``, unchecked.

    Computed with autocast off in fp32 (fp64 for fp64 inputs) from standardised points, so it holds
    for features far from the origin or of any magnitude. No input checks and no host sync: callers
    validate (:func:`mixkit.ot.transport_plan` checks the result's finiteness once).
    """
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y, s = _standardised_points(x.to(dtype), y.to(dtype))
        cost = _sq_distances(x, y)
        if scale == "none":
            return cost * s.square()
        return _normalize(cost, scale)


def squared_euclidean_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances between two batched point sets, in fp32 or fp64.

    Built as ``|x|^2 + |y|^2 - 2 x y^T`` with one batched matmul on standardised points (see the
    module docstring): the ``B x n x m x C`` broadcast of the original code needs about 5 GB at batch
    256 on ResNet-50's layer4. Computed with autocast off, so bf16/fp16 autocast regions still
    accumulate in fp32 (inputs in fp64 stay fp64).

    Args:
        x: Points (B, n, C).
        y: Points (B, m, C).

    Returns:
        Cost (B, n, m), clamped at 0 against rounding.

    Raises:
        ValueError: Bad shapes or dtypes, NaN/Inf features, or distances that overflow the dtype.
    """
    check_point_sets(x, y)
    cost = pairwise_cost(x, y, "none")
    check_finite(cost, NONFINITE_COST.format("x or y", cost.dtype))
    return cost


def _cost_scale(cost: torch.Tensor, scale: CostScale) -> torch.Tensor:
    if scale == "none":
        return torch.ones_like(cost[:, :1, :1])
    if scale == "max":
        s = cost.amax(dim=(1, 2), keepdim=True)
    elif scale == "mean":
        s = cost.mean(dim=(1, 2), keepdim=True)
    elif scale == "std":
        centred = cost - cost.mean(dim=2, keepdim=True) - cost.mean(dim=1, keepdim=True)
        centred = centred + cost.mean(dim=(1, 2), keepdim=True)
        s = centred.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    else:
        raise ValueError(f"unknown cost scale {scale!r}; choose one of {COST_SCALES}")
    # Identical or all-zero sets give a zero scale: any positive value leaves the (constant) cost alone.
    return s.masked_fill(s <= torch.finfo(cost.dtype).tiny, 1.0)


def _normalize(cost: torch.Tensor, scale: CostScale) -> torch.Tensor:
    if scale == "none":
        return cost
    cost = cost / _cost_scale(cost, scale)
    cost = cost - cost.amin(dim=2, keepdim=True)
    return cost - cost.amin(dim=1, keepdim=True)


def cost_scale(cost: torch.Tensor, scale: CostScale = "std") -> torch.Tensor:
    """Per-problem scale of a cost batch, shaped (B, 1, 1) for broadcasting.

    Args:
        cost: Cost (B, n, m); not scanned for NaN/Inf (the solvers check their input).
        scale: "std" (std of the double-centred cost, the default), "max", "mean" or "none" (1).
    """
    check_float_tensor(cost, "cost", 3, finite=False)
    return _cost_scale(cost, scale)


def normalize_cost(cost: torch.Tensor, scale: CostScale = "std") -> torch.Tensor:
    """Divide each problem's cost by its scale (see :func:`cost_scale`), then shift rows and columns.

    Each row, then each column, is shifted to a minimum of 0. The shifts do not change any plan
    (the marginals are fixed) but they keep the entries that matter, a point's nearest partners,
    close to 0: in fp32, ``exp((f + g - C) / eps)`` then loses far less to rounding than with the
    large offsets of far-from-origin points. ``scale="none"`` returns the raw cost untouched.
    """
    check_float_tensor(cost, "cost", 3, finite=False)
    if scale not in COST_SCALES:
        raise ValueError(f"unknown cost scale {scale!r}; choose one of {COST_SCALES}")
    return _normalize(cost, scale)
