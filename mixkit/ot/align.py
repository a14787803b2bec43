"""Feature alignment: solve OT between two point sets, carry one onto the other's coordinates.

One vocabulary with :class:`mixkit.mix.AlignMixup`: the first set is ``a``, the second ``b``;
direction 'to_a' keeps a's positions (b carried onto a), 'to_b' keeps b's (a carried onto b).
"""

from __future__ import annotations

from typing import Literal

import torch

from .checks import check_finite, check_float_tensor, check_plan, check_point_sets
from .cost import COST_SCALES, NONFINITE_COST, CostScale, pairwise_cost
from .registry import Solver, get_solver

Direction = Literal["to_a", "to_b"]
DIRECTIONS: tuple[str, ...] = ("to_a", "to_b")
PROJECTIONS: tuple[str, ...] = ("barycentric", "scaled_plan")


def transport_plan(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    solver: str | Solver = "default",
    eps: float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    cost_scale: CostScale | None = None,
    return_info: bool = False,
):
    """Entropic OT plan between two batched point sets with uniform weights.

    Validates everything once, builds the scaled cost (:func:`mixkit.ot.cost.pairwise_cost`: exact
    under shifts and scales of the features), checks it for NaN/Inf (the one host sync of the cost),
    then runs the solver's kernel unchecked.

    Args:
        a: Points (B, n, C).
        b: Points (B, m, C).
        solver: Registry name or :class:`Solver`; 'default' is the fused Triton kernel on CUDA
            (guarded), the compiled numba loop on the CPU and the torch solver elsewhere.
        eps: Entropic regularisation in units of the scaled cost (a real number or 0-d tensor);
            None takes the solver's default.
        max_iter: Iteration budget; None takes the solver's default.
        tol: Stopping tolerance; None takes the solver's default.
        cost_scale: Cost scaling (see :mod:`mixkit.ot.cost`); None takes the solver's default.
        return_info: Also return the solver's :class:`SolverInfo` (``.solver`` names the solver that ran,
            ``.converged`` whether it reached ``tol``).

    Returns:
        Plan (B, n, m) in fp32 (fp64 for fp64 inputs); rows sum to 1/n, columns to 1/m. And the info
        if asked.
    """
    s = get_solver(solver)
    check_point_sets(a, b, ("a", "b"))
    return _transport_plan(a, b, s, eps, max_iter, tol, cost_scale, return_info)


def _transport_plan(a, b, s: Solver, eps, max_iter, tol, cost_scale, return_info: bool):
    # transport_plan below the point-set checks (align has made them already): the solver's own
    # arguments, the cost and its one finiteness check, the unchecked kernel.
    eps, max_iter, tol = s.resolve_args(eps, max_iter, tol)
    scale = s.cost_scale if cost_scale is None else cost_scale
    if scale not in COST_SCALES:
        raise ValueError(f"unknown cost scale {scale!r}; choose one of {COST_SCALES}")
    cost = pairwise_cost(a, b, scale)
    check_finite(cost, NONFINITE_COST.format("a or b", cost.dtype))
    return s.solve_unchecked(cost, eps, max_iter, tol, return_info=return_info)


def barycentric_projection(plan: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Row-normalised plan times the partner's points: the partner set carried onto the plan's rows.

    Args:
        plan: Plan (B, n, m) between a set of n points and one of m.
        points: The m-point set (B, m, C).

    Returns:
        (B, n, C) in the points' dtype: row i is the plan-weighted mean of the points matched to point i.
    """
    check_float_tensor(plan, "plan", 3, finite=False)
    check_float_tensor(points, "points", 3, finite=False)
    if plan.shape[0] != points.shape[0] or plan.shape[2] != points.shape[1]:
        raise ValueError(f"plan {tuple(plan.shape)} does not match points {tuple(points.shape)}: need (B, n, m) "
                         "and (B, m, C)")
    return _project_rows(plan, points)


def _project_rows(plan: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    weights = plan / plan.sum(dim=2, keepdim=True).clamp_min(torch.finfo(plan.dtype).tiny)
    return torch.bmm(weights.to(points.dtype), points)


def _project(plan: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor, direction: str, projection: str) -> torch.Tensor:
    """The moving set carried onto the kept set's positions, unchecked, in the plan's precision (fp32 under
    autocast): 'to_a' carries b onto a's n positions, 'to_b' a onto b's. 'barycentric': the row-normalised
    plan times the moving points; 'scaled_plan' (the AlignMixup authors'): the plan times n, not normalised."""
    with torch.autocast(device_type=pa.device.type, enabled=False):
        weights = plan if direction == "to_a" else plan.transpose(1, 2)
        moving = (pb if direction == "to_a" else pa).to(plan.dtype)
        if projection == "barycentric":
            aligned = _project_rows(weights, moving)
        else:
            aligned = torch.bmm(weights * pa.shape[1], moving)
    return aligned.to(pa.dtype)


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'to_a' (b carried onto a) or 'to_b' (a carried onto b), got {direction!r}")
    return direction


def align(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    direction: Direction = "to_a",
    solver: str | Solver = "default",
    eps: float | None = None, max_iter: int | None = None, tol: float | None = None,
    cost_scale: CostScale | None = None,
    detach_plan: bool = True,
    plan: torch.Tensor | None = None,
    projection: str = "barycentric",
) -> torch.Tensor:
    """Align one point set to the other's coordinates by optimal transport.

    Args:
        a: Points (B, n, C), e.g. a feature map ``fmap.flatten(2).transpose(1, 2)``.
        b: Points (B, m, C).
        direction: "to_a" returns b carried onto a's n positions (the paper's A' R^T), shape
            (B, n, C); "to_b" returns a carried onto b's m positions (A R), shape (B, m, C).
        solver: Registry name or :class:`Solver`.
        eps: Entropic regularisation; None takes the solver's default.
        max_iter: Iteration budget; None takes the solver's default.
        tol: Stopping tolerance; None takes the solver's default.
        cost_scale: Cost scaling; None takes the solver's default.
        detach_plan: Treat the plan as a constant, as the paper does; gradients still reach both
            a and b through the projection. False differentiates through the solver's iterations
            (solvers with ``differentiable=False``, such as 'pot', raise instead).
        plan: A precomputed (B, n, m) plan between a and b (e.g. reused from an earlier call); the
            solver arguments are then unused. Checked for NaN, Inf and negative entries on the CPU only.
        projection: "barycentric" (each aligned point is the plan-weighted mean of the points matched to it:
            the row-normalised plan) or "scaled_plan" (the AlignMixup authors': the plan times n, rows not
            normalised, so a point's mass error scales it).

    Returns:
        The aligned points in a's dtype.

    Raises:
        ValueError: Bad shapes or arguments, a bad given plan, or ``detach_plan=False`` with a solver
            that cannot carry gradients.
    """
    check_point_sets(a, b, ("a", "b"))
    direction = _check_direction(direction)
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if plan is None:
        s = get_solver(solver)
        needs_grad = not detach_plan and torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
        if needs_grad and not s.differentiable:
            raise ValueError(f"solver {s.name!r} cannot differentiate its plan (detach_plan=False): use "
                             "detach_plan=True (the paper's choice) or a differentiable solver such as 'torch'")
        with torch.set_grad_enabled(needs_grad):
            plan = _transport_plan(a if needs_grad else a.detach(), b if needs_grad else b.detach(), s, eps,
                                   max_iter, tol, cost_scale, False)
    else:
        check_plan(plan, (a.shape[0], a.shape[1], b.shape[1]))
    return _project(plan, a, b, direction, projection)
