"""Input checks of mixkit.ot: point sets, costs, plans, the solvers' shared arguments and options.

Validation happens once, at the public entry points; the unchecked cores below them are private.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

from .defaults import SCALING_DEFAULTS
from .schedule import anneal_schedule

__all__ = ["check_finite", "check_float_tensor", "check_plan", "check_point_sets", "check_scaling_options",
           "check_solver_args", "keyword_options_check"]


def check_finite(t: torch.Tensor, message: str) -> None:
    """Raise if t has NaN/Inf: one host sync, so call it once per tensor.

    Reads the largest magnitude, which NaN and Inf propagate to: two ops (abs, amax) where
    ``isfinite(t).all()`` dispatches five, which counts on CUDA where each op is a launch.
    """
    with torch.no_grad():
        if t.numel() and not math.isfinite(float(t.abs().amax())):
            raise ValueError(message)


def check_float_tensor(t: torch.Tensor, name: str, ndim: int, *, finite: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} has integer/bool dtype {t.dtype}; convert it with {name}.float()")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): every set needs at least one point")
    if t.is_meta:
        raise ValueError(f"{name} is on the meta device (shapes only, no data), so no plan can be computed; "
                         "move it to a real device (e.g. .to('cuda')) or materialise it")
    if finite:
        check_finite(t, f"{name} contains NaN or Inf; check the features (e.g. an fp16 overflow upstream)")


def check_point_sets(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("x", "y")) -> None:
    """Check two batched point sets (B, n, C) and (B, m, C): shapes, dtypes, devices (no NaN scan: the
    cost built from them is checked instead, once)."""
    na, nb = names
    check_float_tensor(a, na, 3, finite=False)
    check_float_tensor(b, nb, 3, finite=False)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"batch sizes differ: {na} has {a.shape[0]} sets, {nb} has {b.shape[0]}")
    if a.shape[2] != b.shape[2]:
        raise ValueError(
            f"channel sizes differ: {na} has {a.shape[2]} channels, {nb} has {b.shape[2]}; "
            "both sets must live in the same feature space"
        )
    if a.device != b.device:
        raise ValueError(f"{na} is on {a.device} but {nb} is on {b.device}; move both to one device")


def _scalar(value: Any, name: str, kind: type) -> Any:
    """A Python number from a real number of any flavour (int, float, numpy scalar, 0-d tensor)."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number or a 0-d real tensor, got a tensor of shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}")
        if kind is numbers.Integral and value.is_floating_point():
            raise TypeError(f"{name} must be an integer, got a {value.dtype} tensor")
        return value.item()  # one host sync for a CUDA tensor: pass Python numbers in a training loop
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if kind is numbers.Integral else "a real number"
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    return int(value) if kind is numbers.Integral else float(value)


def check_solver_args(eps: Any, max_iter: Any, tol: Any) -> tuple[float, int, float]:
    """Validate the three arguments every solver takes; returns them as Python float, int, float.

    Raises:
        TypeError: One is not a real number (``max_iter``: an integer); numpy scalars and 0-d tensors are fine.
        ValueError: ``eps <= 0`` or not finite, ``max_iter < 1``, ``tol < 0``.
    """
    eps, max_iter, tol = _scalar(eps, "eps", numbers.Real), _scalar(max_iter, "max_iter", numbers.Integral), \
        _scalar(tol, "tol", numbers.Real)
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0 (the entropic regularisation), got {eps!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    return eps, max_iter, tol


def check_scaling_options(anneal_factor: float, decay: float, stage_iters: int, check_every: int | None,
                          absorb_every: int, omega: float, **_: Any) -> None:
    """Options of the epsilon-scaling solvers (torch and the fused kernel)."""
    anneal_schedule(1.0, anneal_factor, decay)  # raises on a bad anneal_factor or decay
    if absorb_every < 1 or (check_every is not None and check_every < 1) or stage_iters < 0:
        raise ValueError(
            "absorb_every and check_every must be >= 1 and stage_iters >= 0, "
            f"got {absorb_every}, {check_every}, {stage_iters}"
        )
    if not 1 <= omega < 2:
        raise ValueError(f"omega (over-relaxation) must be in [1, 2), got {omega}")


def keyword_options_check(solver: str) -> Callable[..., None]:
    """The options check of a solver that takes the epsilon-scaling options and ``warn`` as ``**options``
    (the fused kernels and the default solver): unknown names raise a TypeError listing the known ones."""

    def check(options: dict[str, Any], **_: Any) -> None:
        unknown = sorted(set(options) - set(SCALING_DEFAULTS) - {"warn"})
        if unknown:
            raise TypeError(f"{solver} got unknown options {unknown}; it takes {sorted(SCALING_DEFAULTS)} and warn")
        check_scaling_options(**{**SCALING_DEFAULTS, **options})

    return check


def check_plan(plan: torch.Tensor, shape: tuple[int, int, int]) -> None:
    """Checks a given transport plan: a (B, n, m) float tensor; on the CPU also finite, non-negative, and
    with mass in every row (an all-zero row would carry nothing onto its point).

    CUDA plans are not scanned: it would cost a host sync per call (AlignMixup passes its plans every step).

    Raises:
        TypeError: Not a float tensor.
        ValueError: Wrong shape, or (CPU) NaN, Inf, negative entries or an empty row.
    """
    check_float_tensor(plan, "plan", 3, finite=False)
    if plan.shape != shape:
        raise ValueError(f"plan must have shape (B, n, m) = {shape}, got {tuple(plan.shape)}")
    if plan.device.type != "cpu":
        return
    p = plan.detach()
    if not bool((p >= 0).logical_and_(p.isfinite()).all()):
        raise ValueError("plan has NaN, Inf or negative entries: a transport plan is a non-negative coupling "
                         "(from transport_plan, or your own with rows summing to 1/n and columns to 1/m)")
    if not bool(p.sum(dim=2).gt(0).all()):
        raise ValueError("plan has a row without mass (all zeros), which would carry nothing onto its point: a "
                         "transport plan's rows sum to 1/n (from transport_plan, or normalise your own)")
