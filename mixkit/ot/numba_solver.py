"""The "torch" solver's epsilon scaling with each stage's scaling iterations compiled per problem (numba):
the 'numba' solver, mixkit.ot's default on the CPU.

Hand-written because no maintained library fuses batched Sinkhorn on the CPU: POT and the torch solver
run a few array operations per iteration, and on the small problems of feature alignment (16x16 from a
4x4 map, 49x49 from 7x7) each costs a few microseconds of dispatch for well under a microsecond of
arithmetic, over hundreds of iterations. Here the scaling iterations of each annealing stage run, problem
by problem, in one compiled loop with the kernel in the L1 cache, as the Triton kernel does on a GPU:
the same algorithm as :func:`mixkit.ot.sinkhorn_torch` (kernel-domain scaling, over-relaxed in the last
stage, scalings absorbed every ``absorb_every`` iterations, each problem stopping at its first converged
check; sums in fp64). Each stage's log-domain re-anchoring and the final plan stay in torch, whose
vectorised exp over the whole batch numba's scalar exp cannot match.

Compiled on first use (about 2 s) and cached on disk by numba, so later processes load it at once.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Any

import numpy as np
import torch

from .checks import keyword_options_check
from .defaults import DEFAULT_CHECK_EVERY, DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, SCALING_DEFAULTS
from .entry import solver_entry
from .info import SolverInfo, warn_not_converged
from .metrics import plan_marginal_error
from .schedule import anneal_schedule, stage_budgets
from .torch_solver import _anchor, _exponent

_INSTALL_HINT = "the 'numba' OT solver needs the numba package (`pip install numba`), or use solver='torch'"


@functools.cache
def numba_importable() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _build_kernel() -> Any:
    """Import numba and compile the stage loop on first use, so importing mixkit.ot never imports numba."""
    try:
        import numba
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err

    @numba.njit(cache=True, nogil=True, inline="always", fastmath={"reassoc", "contract", "arcp", "nsz"})
    def matvec(mat, vec, out):  # pragma: no cover
        """out[i] = sum_j mat[i, j] * vec[j], summed in fp64."""
        for i in range(mat.shape[0]):
            s = 0.0
            for j in range(mat.shape[1]):
                s += mat[i, j] * vec[j]
            out[i] = s

    @numba.njit(cache=True, nogil=True, inline="always")
    def relaxed(prev, r, relax):  # pragma: no cover
        """One scaling update in units of the marginal: 1 / r, over-relaxed as prev * (prev * r) ** -relax."""
        if relax == 1.0:
            return 1.0 / r
        t = prev * r
        if relax == 1.5:  # t ** -1.5 without pow(), as in the torch solver
            return prev / (t * math.sqrt(t))
        return prev * t ** -relax

    # Reassociation lets LLVM vectorise the mat-vec sums; no 'nnan'/'ninf': the loop must not assume them.
    @numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "arcp", "nsz"})
    def scale_stage(cost, f, g, kernel, eps, budget, relax, last, tol, tiny, check_every, absorb_every, iters,
                    conv):  # pragma: no cover
        """One annealing stage's scaling iterations for every problem, from the anchored kernel K = exp((f+g-C)/eps).

        f and g get the absorbed scalings in place; iters gets each problem's iterations added; conv its
        last-stage test (a problem stops at its first check below tol). Sums in fp64 whatever K's dtype;
        products are floored at ``tiny`` (the smallest normal number of K's dtype), as in the torch solver.
        """
        n_problems, n, m = cost.shape
        a, b = 1.0 / n, 1.0 / m
        log_a, log_b = math.log(a), math.log(b)
        inv_eps = 1.0 / eps
        kernel_t = np.empty((m, n), dtype=kernel.dtype)  # K transposed: the column sums read contiguous rows
        ut, vt = np.empty(n), np.empty(m)
        kv, ktu = np.empty(n), np.empty(m)
        for p in range(n_problems):
            k, c = kernel[p], cost[p]
            done = 0
            converged = False
            while done < budget and not converged:
                if done:  # absorb: the kernel of the current potentials
                    for i in range(n):
                        for j in range(m):
                            k[i, j] = math.exp((f[p, i] + g[p, j] - c[i, j]) * inv_eps)
                for i in range(n):
                    for j in range(m):
                        kernel_t[j, i] = k[i, j]
                # Scalings in units of the marginals (u = a * ut, v = b * vt), as in the torch solver.
                ut[:] = n
                vt[:] = m
                stop = min(done + absorb_every, budget)
                fresh = False  # kv holds K vt for the current vt (a check computed it)
                while done < stop:
                    if not fresh:
                        matvec(k, vt, kv)
                    for i in range(n):
                        ut[i] = relaxed(ut[i], max(kv[i] * b, tiny), relax)
                    matvec(kernel_t, ut, ktu)
                    for j in range(m):
                        vt[j] = relaxed(vt[j], max(ktu[j] * a, tiny), relax)
                    done += 1
                    fresh = False
                    if last and done % check_every == 0:
                        # Rows need K vt for the new vt; columns read K^T ut as computed above (ut unchanged).
                        matvec(k, vt, kv)
                        err = 0.0
                        for i in range(n):
                            err += abs(ut[i] * max(kv[i] * b, tiny) - 1.0) * a
                        for j in range(m):
                            err += abs(vt[j] * ktu[j] * a - 1.0) * b
                        fresh = True
                        if err < tol:
                            converged = True
                            break
                for i in range(n):
                    f[p, i] += eps * (math.log(ut[i]) + log_a)
                for j in range(m):
                    g[p, j] += eps * (math.log(vt[j]) + log_b)
            iters[p] += done
            conv[p] = converged

    return scale_stage


def fallback_reason(cost: torch.Tensor) -> str | None:
    """Why the compiled CPU loop cannot solve this cost (None when it can)."""
    if cost.device.type != "cpu":
        return f"the cost is on {cost.device.type}, and the numba solver runs on the CPU"
    if cost.requires_grad and torch.is_grad_enabled():
        return "the compiled loop has no backward and the cost requires grad (align(..., detach_plan=False))"
    return None


def launch_fused(cost: torch.Tensor, eps: float, max_iter: int, tol: float, **options: Any):
    """Solve, unchecked: returns (plan, per-problem iterations, per-problem converged flags).

    Each stage's log-domain re-anchoring, and the final plan, run in torch (vectorised exp over the whole
    batch, which numba's scalar exp cannot match); the stage's scaling iterations run in the compiled loop.
    """
    opts = {**SCALING_DEFAULTS, **options}
    scale_stage = _build_kernel()
    schedule = anneal_schedule(eps, opts["anneal_factor"], opts["decay"], max_iter)
    budgets = stage_budgets(len(schedule), max_iter, opts["stage_iters"])
    check_every = int(opts["check_every"] or DEFAULT_CHECK_EVERY)
    with torch.no_grad(), torch.autocast(device_type="cpu", enabled=False):
        cost = cost.to(torch.float64 if cost.dtype == torch.float64 else torch.float32).contiguous()
        B, n, m = cost.shape
        cost_np = cost.numpy()
        f, g = cost.new_zeros(B, n), cost.new_zeros(B, m)
        iters = np.zeros(B, dtype=np.int32)
        conv = np.zeros(B, dtype=np.int32)
        for stage, (eps_k, budget) in enumerate(zip(schedule, budgets, strict=True)):
            last = stage == len(schedule) - 1
            f, g, kernel, col_scale = _anchor(cost, f, g, eps_k, n, m)
            kernel = kernel.mul_(col_scale).contiguous()
            f, g = f.contiguous(), g.contiguous()
            iters += 1
            # f and g are updated in place through their numpy views.
            scale_stage(cost_np, f.numpy(), g.numpy(), kernel.numpy(), float(eps_k), int(budget),
                        float(opts["omega"]) if last else 1.0, last, float(tol), torch.finfo(cost.dtype).tiny, check_every,
                        int(opts["absorb_every"]), iters, conv)
        plan = torch.exp(_exponent(f, g, cost, schedule[-1]))
    return plan, torch.from_numpy(iters), torch.from_numpy(conv)


def finish(plan: torch.Tensor, iters: torch.Tensor, conv: torch.Tensor, tol: float, *, warn: bool,
           return_info: bool) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """The plan (and its :class:`SolverInfo` if asked), warning if a problem did not converge."""
    converged = bool(conv.all())
    n_iter = int(iters.max())
    error = plan_marginal_error(plan).amax() if return_info or not converged else None
    if not converged and warn:
        # stacklevel 5: the warning names the line that called sinkhorn_numba
        warn_not_converged("numba", float(error), tol, n_iter, stacklevel=5)
    return (plan, SolverInfo(n_iter, error, "numba", converged, iters)) if return_info else plan


def _sinkhorn_numba(
    cost: torch.Tensor,
    eps: float = DEFAULT_EPS,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    *,
    return_info: bool = False,
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Entropic OT plans with uniform marginals, each problem solved by one compiled CPU loop.

    The algorithm and options of :func:`mixkit.ot.sinkhorn_torch` (plans agree to rounding), in fp64;
    each problem stops on its own. Costs on other devices, or that need a gradient, are solved by
    the torch solver instead.

    Args:
        cost: Cost (B, n, m), already scaled (see :func:`mixkit.ot.normalize_cost`).
        eps: Entropic regularisation, in the cost's units.
        max_iter: Iteration budget, annealing included.
        tol: Marginal error (L1, rows plus columns) to reach.
        return_info: Also return a :class:`SolverInfo` (with ``n_iter_per_problem``).
        **options: The epsilon-scaling options of :func:`mixkit.ot.sinkhorn_torch`, and ``warn``.

    Returns:
        Plans (B, n, m) in the cost's dtype (fp32 at least), and the info if asked.
    """
    if fallback_reason(cost) is not None:
        from .torch_solver import _sinkhorn_torch

        return _sinkhorn_torch(cost, eps, max_iter, tol, return_info=return_info, **options)
    plan, iters, conv = launch_fused(cost, eps, max_iter, tol, **options)
    return finish(plan, iters, conv, tol, warn=options.get("warn", True), return_info=return_info)


# The checked public entry point (mixkit.ot.entry): validates, then runs the kernel above.
sinkhorn_numba = solver_entry(_sinkhorn_numba, keyword_options_check("sinkhorn_numba"))
