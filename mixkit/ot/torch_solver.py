"""Batched entropic OT in torch: epsilon scaling with warm-started potentials (the 'torch' solver).

Written by hand because no maintained library has what alignment needs: POT's batched Sinkhorn
(``ot.batch``) runs a log-sum-exp (an exp per cost entry) per half-iteration at one fixed eps, so a
sharp eps (few partners per row) costs many expensive iterations, and it checks convergence on the
host after every few iterations.

The method (Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy regularized transport"):
potentials f, g are kept in the log domain; eps is lowered geometrically from ``eps * anneal_factor``
to ``eps``, each stage warm-starting from the last. At the start of each stage one log-domain
update re-anchors the potentials (so no row of the kernel underflows, even on raw costs), then
cheap kernel-domain scaling iterations (two batched mat-vecs each, no exp) run on the absorbed
kernel K = exp((f + g - C) / eps), re-formed every ``absorb_every`` iterations.

Convergence is checked every ``check_every`` iterations of the last stage. Each check is one host
sync on CUDA, so the default period depends on the device (:func:`mixkit.ot.schedule.default_check_every`:
10 on the CPU, 100 for the default budget on CUDA, at most 10 checks per solve); pass
``check_every=default_check_every("cuda", max_iter)`` on CPU tensors to run the CUDA schedule there.
Each problem stops at the first check that finds it converged, as in the fused kernel: the problems
that converged leave the batch, and the remaining iterations run on the slow ones alone (on real
features a batch's iteration counts spread over 4x and more, so this halves a solve on the CPU).
"""

from __future__ import annotations

import math

import torch

from .checks import check_scaling_options
from .defaults import (
    DEFAULT_ABSORB_EVERY,
    DEFAULT_ANNEAL_FACTOR,
    DEFAULT_DECAY,
    DEFAULT_EPS,
    DEFAULT_MAX_ITER,
    DEFAULT_OMEGA,
    DEFAULT_STAGE_ITERS,
    DEFAULT_TOL,
)
from .entry import solver_entry
from .info import SolverInfo, warn_not_converged
from .metrics import plan_marginal_error
from .schedule import anneal_schedule, default_check_every, stage_budgets


def _exponent(f: torch.Tensor | None, g: torch.Tensor | None, cost: torch.Tensor, eps: float) -> torch.Tensor:
    """(f_i + g_j - C_ij) / eps in one pass over the cost (f or g None: left out)."""
    if f is None:
        pot = (g / eps).unsqueeze(1)
    elif g is None:
        pot = (f / eps).unsqueeze(2)
    else:
        pot = (f / eps).unsqueeze(2) + (g / eps).unsqueeze(1)
    return torch.add(pot, cost, alpha=-1.0 / eps)


def _lse_exp(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log-sum-exp of x along dim (keepdim), exp(x - max) (in place where autograd allows) and its sums.

    torch.logsumexp also guards against infinite maxima, which a finite cost cannot produce: three
    passes over the (B, n, m) tensor fewer per call.
    """
    x_max = x.amax(dim=dim, keepdim=True)
    e = x.sub_(x_max).exp_() if not x.requires_grad else (x - x_max).exp()
    sums = e.sum(dim=dim, keepdim=True)
    return x_max + sums.log(), e, sums


def _anchor(cost: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float, n: int, m: int):
    """One log-domain Sinkhorn update (rows, then columns): the new f, g and their kernel as (E, column scale).

    Rows then columns of K = exp((f + g - C) / eps) sum exactly to 1/n, 1/m, so no row underflows
    whatever eps and the cost's scale. K = E * (1/m) / colsum(E) comes from the column log-sum-exp's own
    exponentials E: a multiply, not another exp over the cost.
    """
    lse, _, _ = _lse_exp(_exponent(None, g, cost, eps), dim=2)
    f = eps * (-math.log(n) - lse.squeeze(2))
    lse, e, col_sums = _lse_exp(_exponent(f, None, cost, eps), dim=1)
    g = eps * (-math.log(m) - lse.squeeze(1))
    return f, g, e, (1.0 / m) / col_sums


def _matvec(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Batched v @ K, floored at the dtype's smallest normal number: a row whose kernel entries all
    underflow (long unannealed runs at small eps) must not turn into inf and NaN."""
    out = torch.bmm(v, kernel)
    tiny = torch.finfo(out.dtype).tiny
    return out.clamp_min(tiny) if out.requires_grad else out.clamp_min_(tiny)


def _scale(r: torch.Tensor, prev: torch.Tensor, relax: float) -> torch.Tensor:
    """One Sinkhorn half-update in units of the marginal: 1 / r, over-relaxed as prev * (prev * r) ** -relax.

    ``r`` is the fresh K v product, updated in place unless autograd needs the values. The
    over-relaxed form prev * (new / prev) ** relax with new = 1 / r, in two fused steps.
    """
    if r.requires_grad:  # differentiating through the solver: autograd needs the intermediate values
        return r.reciprocal() if relax == 1.0 else prev * (prev * r).pow(-relax)
    if relax == 1.0:
        return r.reciprocal_()
    r = r.mul_(prev)
    # t ** -1.5 as rsqrt(t) / t: a generic pow is ten times slower on the CPU than rsqrt.
    r = torch.rsqrt(r).div_(r) if relax == 1.5 else r.pow_(-relax)
    return r.mul_(prev)


def _absorb(potential: torch.Tensor, scaling: torch.Tensor, eps: float, marginal: float) -> torch.Tensor:
    """The potential with a scaling (B, 1, k), kept in units of the marginal, absorbed into it."""
    return potential + eps * (torch.log(scaling.squeeze(1)) + math.log(marginal))


def _write(full: torch.Tensor, active: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    """``full`` with the rows of the active problems replaced by ``part`` (all of them when active is None)."""
    return part if active is None else full.index_copy(0, active, part)


def _sinkhorn_torch(
    cost: torch.Tensor, eps: float = DEFAULT_EPS, max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL, *,
    anneal_factor: float = DEFAULT_ANNEAL_FACTOR,
    decay: float = DEFAULT_DECAY,
    stage_iters: int = DEFAULT_STAGE_ITERS,
    check_every: int | None = None,
    absorb_every: int = DEFAULT_ABSORB_EVERY,
    omega: float = DEFAULT_OMEGA,
    warn: bool = True,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Entropic OT plans with uniform marginals for a batch of costs.

    Host syncs: one per convergence check (``bool(err < tol)``), plus one at the end when the budget
    ran out (the final marginal error, to report it); none on the CPU matter.

    Args:
        cost: Cost (B, n, m), already scaled (see :func:`mixkit.ot.normalize_cost`).
        eps: Entropic regularisation, in the cost's units.
        max_iter: Iteration budget, annealing included; never exceeded (a budget smaller than the
            number of annealing stages drops the coarsest stages).
        tol: Stop when the largest marginal error (L1, rows plus columns) is below this.
        anneal_factor: The first stage's eps is ``eps * anneal_factor``; 1 disables annealing.
        decay: Ratio between consecutive eps stages.
        stage_iters: Scaling iterations per intermediate stage.
        check_every: Convergence check period (last stage). None: 10 on the CPU; on CUDA a multiple of
            10 that keeps a solve under 10 checks (100 for the default budget); see
            :func:`mixkit.ot.schedule.default_check_every`.
        absorb_every: Period at which the scalings are absorbed into the potentials (one exp).
        omega: Over-relaxation of the last stage's scaling updates (Thibault et al. 2017), in [1, 2);
            safe here because annealing starts the last stage close to the solution.
        warn: Warn (RuntimeWarning) when the plan did not reach ``tol`` within ``max_iter``.
        return_info: Also return a :class:`SolverInfo`.

    Returns:
        Plans (B, n, m) in the cost's dtype (fp32 at least), each summing to 1 with rows 1/n and
        columns 1/m; and the info if asked.
    """
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    if check_every is None:
        check_every = default_check_every(cost.device, max_iter)
    schedule = anneal_schedule(eps, anneal_factor, decay, max_iter)
    budgets = stage_budgets(len(schedule), max_iter, stage_iters)
    with torch.autocast(device_type=cost.device.type, enabled=False):
        cost = cost.to(dtype)
        B, n, m = cost.shape
        a, b = 1.0 / n, 1.0 / m
        # Scalings are kept in units of the marginals (u = a * ut, v = b * vt), so that an update is
        # 1 / (K' v): the marginals are folded into the two kernel copies K' below.
        minus_one = cost.new_full((1, 1, 1), -1.0)
        f = cost.new_zeros(B, n)
        g = cost.new_zeros(B, m)
        n_iter, converged = 0, False
        stopped_at = []  # (problem indices, iteration count) of the problems that left the batch early
        for stage, (eps_k, budget) in enumerate(zip(schedule, budgets, strict=True)):
            last = stage == len(schedule) - 1
            # Re-anchor in the log domain: rows then columns of exp((f+g-C)/eps_k) sum exactly to a, b.
            f, g, kernel, col_scale = _anchor(cost, f, g, eps_k, n, m)
            n_iter += 1
            relax = omega if last else 1.0
            # The problems still iterating: all of them (None) until a check of the last stage finds some
            # converged. Those leave the batch with their potentials, so that the iterations that the
            # slowest problems need run on them alone (a batch's iteration counts spread over 4x or more).
            active = None
            f_act, g_act, cost_act = f, g, cost
            done = 0
            while done < budget and not converged:
                # Absorb the scalings into the potentials every `absorb_every` iterations, so that they
                # stay near 1 and neither over- nor underflows in long stages.
                if done:
                    kernel, col_scale = torch.exp(_exponent(f_act, g_act, cost_act, eps_k)), 1.0
                # K' for the u update (K / m, transposed: (1, m) @ (m, n) batched is the fastest mat-vec
                # form on CPU) and for the v update (K / n); the second scales K's own storage.
                kernel_u = (kernel * (col_scale * b)).transpose(1, 2).contiguous()
                kernel_v = kernel.mul_(col_scale * a) if not kernel.requires_grad else kernel * (col_scale * a)
                ut = cost.new_full((f_act.shape[0], 1, n), float(n))
                vt = cost.new_full((f_act.shape[0], 1, m), float(m))
                r = None  # K' v, when a convergence check has computed it already
                for _ in range(min(absorb_every, budget - done)):
                    # In-place ops on the fresh products: these are tiny tensors, so the cost of an
                    # iteration is the number of op launches (6, or 12 over-relaxed), not arithmetic.
                    ut = _scale(_matvec(vt, kernel_u) if r is None else r, ut, relax)
                    vt = _scale(_matvec(ut, kernel_v), vt, relax)
                    done, r = done + 1, None
                    if last and done % check_every == 0:
                        r = _matvec(vt, kernel_u)
                        rows = torch.linalg.vector_norm(torch.addcmul(minus_one, ut, r), ord=1, dim=2)
                        cols = torch.linalg.vector_norm(
                            torch.addcmul(minus_one, vt, torch.bmm(ut, kernel_v)), ord=1, dim=2)
                        met = (rows * a + cols * b).squeeze(1) < tol
                        keep = (~met).nonzero().squeeze(1)  # the one host sync
                        converged = keep.numel() == 0
                        if converged:
                            break
                        if keep.numel() < ut.shape[0]:  # some converged: write their potentials, drop them
                            f = _write(f, active, _absorb(f_act, ut, eps_k, a))
                            g = _write(g, active, _absorb(g_act, vt, eps_k, b))
                            if return_info:
                                left = met.nonzero().squeeze(1)
                                stopped_at.append((left if active is None else active[left], n_iter + done))
                            active = keep if active is None else active[keep]
                            f_act, g_act, cost_act = f_act[keep], g_act[keep], cost_act[keep]
                            kernel_u, kernel_v, ut, vt, r = (t[keep] for t in (kernel_u, kernel_v, ut, vt, r))
                f_act, g_act = _absorb(f_act, ut, eps_k, a), _absorb(g_act, vt, eps_k, b)
            f, g = _write(f, active, f_act), _write(g, active, g_act)
            n_iter += done
        plan = torch.exp(_exponent(f, g, cost, schedule[-1]))
        error = None
        if not converged:  # the budget ran out between checks: judge the plan itself (one sync)
            error = plan_marginal_error(plan).amax()
            final = float(error)
            converged = final <= tol
            if not converged and warn:
                warn_not_converged("torch", final, tol, n_iter)
        if not return_info:
            return plan
        error = plan_marginal_error(plan).amax() if error is None else error
        per_problem = torch.full((B,), n_iter, dtype=torch.int32, device=cost.device)
        for index, count in stopped_at:
            per_problem[index] = count
        return plan, SolverInfo(n_iter, error, "torch", converged, per_problem)


# The checked public entry point (mixkit.ot.entry): validates, then runs the kernel above.
sinkhorn_torch = solver_entry(_sinkhorn_torch, check_scaling_options)
