"""The paper's solver as published, for comparison (AlignMixup, CVPR 2022, its ``SinkhornDistance``).

Log-domain Sinkhorn on the raw squared-distance cost with eps 0.1, at most 100 iterations and an
early stop when the batch mean of sum_i |u_i - u_i_prev| falls under 0.1 (a host sync per
iteration). On real deep features it stops far from convergence: see the README's solver section.
``reference_cost`` is the published B x n x m x C broadcast, kept for the benchmark's
cost-building column only.
"""

from __future__ import annotations

import math

import torch

from .checks import check_point_sets
from .entry import solver_entry
from .info import SolverInfo
from .metrics import plan_marginal_error

REFERENCE_EPS = 0.1
REFERENCE_MAX_ITER = 100
REFERENCE_TOL = 0.1


def reference_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The published cost: sum over channels of |x_i - y_j|^2 through a (B, n, m, C) broadcast."""
    check_point_sets(x, y)
    return (x.unsqueeze(2) - y.unsqueeze(1)).abs().pow(2).sum(-1)


def _sinkhorn_reference(
    cost: torch.Tensor, eps: float = REFERENCE_EPS, max_iter: int = REFERENCE_MAX_ITER, tol: float = REFERENCE_TOL, *,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """The paper's log-domain Sinkhorn.

    Args:
        cost: Cost (B, n, m); the paper feeds the raw squared distances.
        eps: Entropic regularisation.
        max_iter: Iteration limit.
        tol: Early stop threshold on the batch mean of sum_i |du_i| (the published criterion).
        return_info: Also return a :class:`SolverInfo` (``converged``: the published criterion was met).
    """
    B, n, m = cost.shape
    # The published code adds 1e-8 inside the log of the uniform marginals.
    log_mu, log_nu = math.log(1.0 / n + 1e-8), math.log(1.0 / m + 1e-8)
    u = cost.new_zeros(B, n)
    v = cost.new_zeros(B, m)

    def scores(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (-cost + u.unsqueeze(-1) + v.unsqueeze(-2)) / eps

    n_iter, converged = 0, False
    for _ in range(max_iter):
        u_prev = u
        u = eps * (log_mu - torch.logsumexp(scores(u, v), dim=-1)) + u
        v = eps * (log_nu - torch.logsumexp(scores(u, v).transpose(-2, -1), dim=-1)) + v
        n_iter += 1
        converged = (u - u_prev).abs().sum(-1).mean().item() < tol
        if converged:
            break
    plan = torch.exp(scores(u, v))
    if not return_info:
        return plan
    return plan, SolverInfo(n_iter, plan_marginal_error(plan).amax(), "reference", converged)


# The checked public entry point (mixkit.ot.entry): validates, then runs the kernel above.
sinkhorn_reference = solver_entry(_sinkhorn_reference)
