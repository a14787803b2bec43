"""Plan diagnostics: marginal error, effective partners per row, cost relative to exact OT."""

from __future__ import annotations

import torch

from .checks import check_float_tensor


def marginal_error(plan: torch.Tensor) -> torch.Tensor:
    """Per problem, the L1 distance of the plan's row and column sums to uniform 1/n and 1/m, summed.

    Returns:
        (B,) errors; 0 for an exact coupling, 2 or more for a plan that ignores the marginals.
    """
    check_float_tensor(plan, "plan", 3)
    return plan_marginal_error(plan)


def plan_marginal_error(plan: torch.Tensor) -> torch.Tensor:
    """:func:`marginal_error` without the input checks (no host sync): NaN for a non-finite plan."""
    _, n, m = plan.shape
    rows = torch.linalg.vector_norm(plan.sum(dim=2) - 1.0 / n, ord=1, dim=1)
    cols = torch.linalg.vector_norm(plan.sum(dim=1) - 1.0 / m, ord=1, dim=1)
    return rows + cols


def effective_partners(plan: torch.Tensor) -> torch.Tensor:
    """Mean over rows of exp(entropy of the row-normalised plan), per problem.

    1 means each point is matched to a single partner (a permutation); m means uniform averaging.
    """
    check_float_tensor(plan, "plan", 3)
    rows = plan / plan.sum(dim=2, keepdim=True).clamp_min(torch.finfo(plan.dtype).tiny)
    entropy = -(rows * torch.log(rows.clamp_min(torch.finfo(plan.dtype).tiny))).sum(dim=2)
    return entropy.exp().mean(dim=1)


def transport_cost(plan: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """<plan, cost> per problem."""
    return (plan * cost).sum(dim=(1, 2))


def relative_transport_cost(plan: torch.Tensor, cost: torch.Tensor, exact_plan: torch.Tensor) -> torch.Tensor:
    """<plan, cost> / <exact plan, cost> per problem (>= 1 up to the plan's marginal error)."""
    exact = transport_cost(exact_plan.to(cost.dtype), cost)
    return transport_cost(plan.to(cost.dtype), cost) / exact.clamp_min(torch.finfo(cost.dtype).tiny)
