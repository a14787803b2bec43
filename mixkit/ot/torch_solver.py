"""Batched entropic OT in torch: epsilon scaling with warm-started potentials, the default solver.

Written by hand because no maintained library has what alignment needs: POT's batched Sinkhorn
(``ot.batch``) runs a log-sum-exp (an exp per cost entry) per half-iteration at one fixed eps, so a
sharp eps (few partners per row) costs many expensive iterations, and it checks convergence on the
host.

The method (Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy regularized transport"):
potentials f, g are kept in the log domain; eps is lowered geometrically from ``eps * anneal_factor``
to ``eps``, each stage warm-starting from the last. At the start of each stage one log-domain
update re-anchors the potentials (so no row of the kernel underflows, even on raw costs), then
cheap kernel-domain scaling iterations (two batched mat-vecs each, no exp) run on the absorbed
kernel K = exp((f + g - C) / eps), re-formed every ``absorb_every`` iterations. On CPU convergence
is checked every ``check_every`` iterations; on CUDA the loop runs a fixed ``max_iter`` with no
host synchronisation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import check_float_tensor, check_solver_args
from .metrics import marginal_error

DEFAULT_EPS = 0.05
DEFAULT_MAX_ITER = 1000
DEFAULT_TOL = 1e-3
DEFAULT_OMEGA = 1.5


class SolverInfo(NamedTuple):
    """Diagnostics of one solve.

    Attributes:
        n_iter: Scaling iterations run, annealing stages included.
        marginal_error: Largest :func:`mixkit.ot.marginal_error` (rows plus columns, L1) over the
            batch, a 0-dim tensor so CUDA callers are not forced to synchronise.
    """

    n_iter: int
    marginal_error: torch.Tensor


def _log_update(cost: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float, log_a: float, log_b: float):
    f = eps * (log_a - torch.logsumexp((g.unsqueeze(1) - cost) / eps, dim=2))
    g = eps * (log_b - torch.logsumexp((f.unsqueeze(2) - cost) / eps, dim=1))
    return f, g


def _scaling_error(kernel: torch.Tensor, kernel_t: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                   a: float, b: float) -> torch.Tensor:
    """Largest L1 marginal error (rows plus columns) of diag(u) K diag(v) over the batch."""
    rows = (u * torch.bmm(v, kernel_t) - a).abs().sum(dim=2)
    cols = (v * torch.bmm(u, kernel) - b).abs().sum(dim=2)
    return (rows + cols).amax()


def _scale(k_v: torch.Tensor, marginal: float, prev: torch.Tensor, relax: float) -> torch.Tensor:
    """Sinkhorn update marginal / (K v), over-relaxed as prev * (new / prev) ** relax, in place on k_v."""
    # The floor keeps a row whose kernel entries all underflow (long unannealed runs at small eps)
    # from turning into inf and NaN.
    tiny = torch.finfo(k_v.dtype).tiny
    if k_v.requires_grad:  # differentiating through the solver: autograd needs the intermediate values
        new = marginal / k_v.clamp_min(tiny)
        return new if relax == 1.0 else prev * (new / prev) ** relax
    new = k_v.clamp_min_(tiny).reciprocal_().mul_(marginal)
    if relax == 1.0:
        return new
    return new.div_(prev).pow_(relax).mul_(prev)


def anneal_schedule(eps: float, anneal_factor: float, decay: float) -> list[float]:
    """Geometric eps schedule from ``eps * anneal_factor`` down to ``eps`` (inclusive)."""
    if anneal_factor < 1:
        raise ValueError(f"anneal_factor must be >= 1 (1 disables annealing), got {anneal_factor}")
    if not 0 < decay < 1:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    n_stages = max(0, math.ceil(math.log(anneal_factor) / -math.log(decay) - 1e-9))
    return [eps * max(1.0, anneal_factor * decay**k) for k in range(n_stages)] + [eps]


def sinkhorn_torch(
    cost: torch.Tensor,
    eps: float = DEFAULT_EPS,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    *,
    anneal_factor: float = 64.0,
    decay: float = 0.5,
    stage_iters: int = 4,
    check_every: int = 10,
    absorb_every: int = 100,
    omega: float = DEFAULT_OMEGA,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Entropic OT plans with uniform marginals for a batch of costs.

    Args:
        cost: Cost (B, n, m), already scaled (see :func:`mixkit.ot.normalize_cost`).
        eps: Entropic regularisation, in the cost's units.
        max_iter: Iteration budget, annealing included. On CUDA exactly this many run.
        tol: Stop (CPU only) when the largest marginal error (L1, rows plus columns) is below this.
        anneal_factor: The first stage's eps is ``eps * anneal_factor``; 1 disables annealing.
        decay: Ratio between consecutive eps stages.
        stage_iters: Scaling iterations per intermediate stage.
        check_every: Convergence check period on CPU.
        absorb_every: Period at which the scalings are absorbed into the potentials (one exp).
        omega: Over-relaxation of the last stage's scaling updates (Thibault et al. 2017), in [1, 2);
            safe here because annealing starts the last stage close to the solution.
        return_info: Also return a :class:`SolverInfo`.

    Returns:
        Plans (B, n, m) in the cost's dtype (fp32 at least), each summing to 1 with rows 1/n and
        columns 1/m; and the info if asked.
    """
    check_float_tensor(cost, "cost", 3)
    check_solver_args(eps, max_iter, tol)
    if absorb_every < 1 or check_every < 1 or stage_iters < 0:
        raise ValueError(
            f"absorb_every and check_every must be >= 1 and stage_iters >= 0, got {absorb_every}, {check_every}, {stage_iters}"
        )
    if not 1 <= omega < 2:
        raise ValueError(f"omega (over-relaxation) must be in [1, 2), got {omega}")
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    sync_free = cost.device.type == "cuda"
    schedule = anneal_schedule(eps, anneal_factor, decay)
    with torch.autocast(device_type=cost.device.type, enabled=False):
        cost = cost.to(dtype)
        B, n, m = cost.shape
        a, b = 1.0 / n, 1.0 / m
        log_a, log_b = -math.log(n), -math.log(m)
        f = cost.new_zeros(B, n)
        g = cost.new_zeros(B, m)
        n_iter = 0
        for stage, eps_k in enumerate(schedule):
            last = stage == len(schedule) - 1
            # Re-anchor in the log domain: rows then columns of exp((f+g-C)/eps_k) sum exactly to a, b.
            f, g = _log_update(cost, f, g, eps_k, log_a, log_b)
            n_iter += 1
            relax = omega if last else 1.0
            budget = max_iter - n_iter if last else min(stage_iters, max_iter - n_iter - (len(schedule) - stage - 1))
            done, converged = 0, False
            while done < budget and not converged:
                # Absorb the scalings into the potentials every `absorb_every` iterations, so that u and
                # v stay near 1 and neither over- nor underflows in long stages.
                kernel = torch.exp((f.unsqueeze(2) + g.unsqueeze(1) - cost) / eps_k)
                # Scalings as row vectors: (1, m) @ (m, n) batched is the fastest mat-vec form on CPU.
                kernel_t = kernel.transpose(1, 2).contiguous()
                u = cost.new_ones(B, 1, n)
                v = cost.new_ones(B, 1, m)
                for _ in range(min(absorb_every, budget - done)):
                    # In-place ops on the fresh bmm outputs: these are tiny tensors, so the cost of an
                    # iteration is the number of op launches, not arithmetic.
                    u = _scale(torch.bmm(v, kernel_t), a, u, relax)
                    v = _scale(torch.bmm(u, kernel), b, v, relax)
                    done += 1
                    if last and not sync_free and done % check_every == 0:
                        converged = bool(_scaling_error(kernel, kernel_t, u, v, a, b) < tol)
                        if converged:
                            break
                f = f + eps_k * torch.log(u.squeeze(1))
                g = g + eps_k * torch.log(v.squeeze(1))
            n_iter += done
        plan = torch.exp((f.unsqueeze(2) + g.unsqueeze(1) - cost) / schedule[-1])
        if not return_info:
            return plan
        return plan, SolverInfo(n_iter, marginal_error(plan).amax())
