"""Feature alignment: solve OT between two point sets, carry one onto the other's coordinates."""

from __future__ import annotations

from typing import Literal

import torch

from ._checks import check_float_tensor, check_point_sets
from .cost import CostScale, normalize_cost, squared_euclidean_cost
from .registry import Solver, get_solver

Direction = Literal["to_x", "to_y"]


def transport_plan(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    solver: str | Solver = "torch",
    eps: float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    cost_scale: CostScale | None = None,
) -> torch.Tensor:
    """Entropic OT plan between two batched point sets with uniform weights.

    Args:
        x: Points (B, n, C).
        y: Points (B, m, C).
        solver: Registry name or :class:`Solver`.
        eps: Entropic regularisation in units of the scaled cost; None takes the solver's default.
        max_iter: Iteration budget; None takes the solver's default.
        tol: Stopping tolerance; None takes the solver's default.
        cost_scale: Cost scaling (see :mod:`mixkit.ot.cost`); None takes the solver's default.

    Returns:
        Plan (B, n, m) in fp32 (fp64 for fp64 inputs); rows sum to 1/n, columns to 1/m.
    """
    s = get_solver(solver)
    cost = normalize_cost(squared_euclidean_cost(x, y), s.cost_scale if cost_scale is None else cost_scale)
    return s(cost, eps, max_iter, tol)


def barycentric_projection(plan: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-normalised plan times the partner's points: y carried onto the plan's rows.

    Args:
        plan: Plan (B, n, m).
        y: Points (B, m, C).

    Returns:
        (B, n, C) in y's dtype: row i is the plan-weighted mean of the y points matched to x_i.
    """
    check_float_tensor(plan, "plan", 3, finite=False)
    check_float_tensor(y, "y", 3, finite=False)
    if plan.shape[0] != y.shape[0] or plan.shape[2] != y.shape[1]:
        raise ValueError(f"plan {tuple(plan.shape)} does not match points {tuple(y.shape)}: need (B, n, m) and (B, m, C)")
    weights = plan / plan.sum(dim=2, keepdim=True).clamp_min(torch.finfo(plan.dtype).tiny)
    return torch.bmm(weights.to(y.dtype), y)


def align(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    direction: Direction = "to_x",
    solver: str | Solver = "torch",
    eps: float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    cost_scale: CostScale | None = None,
    detach_plan: bool = True,
    plan: torch.Tensor | None = None,
) -> torch.Tensor:
    """Align one point set to the other's coordinates by optimal transport.

    Args:
        x: Points (B, n, C), e.g. a feature map ``fmap.flatten(2).transpose(1, 2)``.
        y: Points (B, m, C).
        direction: "to_x" returns y carried onto x's n positions (the paper's A' R^T), shape
            (B, n, C); "to_y" returns x carried onto y's m positions (A R), shape (B, m, C).
        solver: Registry name or :class:`Solver`.
        eps: Entropic regularisation; None takes the solver's default.
        max_iter: Iteration budget; None takes the solver's default.
        tol: Stopping tolerance; None takes the solver's default.
        cost_scale: Cost scaling; None takes the solver's default.
        detach_plan: Treat the plan as a constant, as the paper does; gradients still reach both
            x and y through the projection. False differentiates through the solver's iterations.
        plan: A precomputed (B, n, m) plan between x and y (e.g. reused from an earlier call); the
            solver arguments are then unused.

    Returns:
        The aligned points in x's dtype.
    """
    check_point_sets(x, y)
    if direction not in ("to_x", "to_y"):
        raise ValueError(f"direction must be 'to_x' or 'to_y', got {direction!r}")
    if plan is None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_plan):
            plan = transport_plan(
                x.detach() if detach_plan else x, y.detach() if detach_plan else y,
                solver=solver, eps=eps, max_iter=max_iter, tol=tol, cost_scale=cost_scale,
            )
    elif plan.shape != (x.shape[0], x.shape[1], y.shape[1]):
        raise ValueError(f"plan must have shape (B, n, m) = {(x.shape[0], x.shape[1], y.shape[1])}, got {tuple(plan.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        if direction == "to_x":
            out = barycentric_projection(plan, y.to(plan.dtype))
        else:
            out = barycentric_projection(plan.transpose(1, 2), x.to(plan.dtype))
    return out.to(x.dtype)
