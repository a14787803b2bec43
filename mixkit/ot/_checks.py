"""Input validation shared by the cost, solvers and alignment: errors name the problem and the fix."""

from __future__ import annotations

import math

import torch


def check_finite(t: torch.Tensor, message: str) -> None:
    """Raise if t has NaN/Inf: one reduction and one host sync, so call it on small tensors (costs, plans)."""
    if not torch.isfinite(t.detach()).all():
        raise ValueError(message)


def check_float_tensor(t: torch.Tensor, name: str, ndim: int, *, finite: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} has integer/bool dtype {t.dtype}; convert it with {name}.float()")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.numel() == 0 or 0 in t.shape:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): every set needs at least one point")
    if finite:
        check_finite(t, f"{name} contains NaN or Inf; check the features (e.g. an fp16 overflow upstream)")


def check_point_sets(x: torch.Tensor, y: torch.Tensor) -> None:
    """Check two batched point sets (B, n, C) and (B, m, C): shapes, dtypes, devices.

    NaN/Inf are not scanned here (a pass over B*n*C values); :func:`squared_euclidean_cost` checks
    its (B, n, m) result instead, which any NaN/Inf feature poisons.
    """
    check_float_tensor(x, "x", 3, finite=False)
    check_float_tensor(y, "y", 3, finite=False)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"batch sizes differ: x has {x.shape[0]} sets, y has {y.shape[0]}")
    if x.shape[2] != y.shape[2]:
        raise ValueError(
            f"channel sizes differ: x has {x.shape[2]} channels, y has {y.shape[2]}; "
            "both sets must live in the same feature space"
        )
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}; move both to one device")


def check_solver_args(eps: float, max_iter: int, tol: float) -> None:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0 (the entropic regularisation), got {eps!r}")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
