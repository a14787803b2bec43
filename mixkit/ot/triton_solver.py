"""The "torch" solver's epsilon scaling as one fused Triton kernel: one program per problem, no host sync.

Hand-written because no maintained library fuses batched Sinkhorn into one kernel: POT's batched
solver and GeomLoss's tensorised backend run a few array operations per iteration, and for the
small problems of feature alignment (49x49 from a 7x7 map) a GPU is then bound by launches, not
arithmetic (~10 launches per iteration in :func:`mixkit.ot.sinkhorn_torch`). Here one launch runs
the whole solve: every annealing stage (log-domain re-anchoring, then kernel-domain scaling
iterations with over-relaxation in the last stage, absorbing the scalings into the potentials every
``absorb_every`` iterations) with the absorbed kernel K held in registers, and each program stops on
its own once its marginal error is below ``tol``: easy problems do not wait for hard ones, and
nothing is read back on the host.

Verified without a GPU: plans, marginals and per-problem iteration counts under Triton's interpreter
(``TRITON_INTERPRET=1``) against ``sinkhorn_torch`` and POT, and that the kernel compiles ahead of
time for sm_90 (H100), register use read from ptxas (tests/test_ot_triton.py). Not verified: a run
on a real GPU and any timing; it is opt-in until it has been measured.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any

import torch

from .checks import keyword_options_check
from .defaults import DEFAULT_CHECK_EVERY, DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, SCALING_DEFAULTS
from .entry import solver_entry
from .info import SolverInfo, warn_not_converged
from .metrics import plan_marginal_error
from .schedule import anneal_schedule, stage_budgets
from .torch_solver import _sinkhorn_torch

# One program holds its whole padded n x m kernel in registers. ptxas (sm_90a) reports no spills up to
# 64 x 64 (49x49 problems), some from 128 x 128, and kilobytes per thread at 256 x 256 (196x196 ViT
# tokens: correct, likely slow); beyond that the solve goes to sinkhorn_torch instead.
MAX_TILE = 256 * 256
# About 16 kernel entries per thread (64 x 64 on 8 warps: 199 registers, no spills), 32 warps at most.
_ENTRIES_PER_THREAD = 16
_MAX_WARPS = 32

_INSTALL_HINT = (
    "the 'triton' OT solver needs the triton package (it ships with CUDA builds of torch; "
    "`pip install triton` otherwise), or use solver='torch'"
)


@functools.lru_cache(maxsize=64)
def _stage_table(schedule: tuple[float, ...], budgets: tuple[int, ...],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached so that a training loop copies the schedule to the device once, not every step.
    return (torch.tensor(schedule, dtype=torch.float32, device=device),
            torch.tensor(budgets, dtype=torch.int32, device=device))


def _next_pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


@functools.cache
def _build_kernel() -> tuple[Any, bool]:
    """Import triton and define the kernel on first use, so importing mixkit.ot never imports triton.

    Returns:
        The jitted kernel and whether it runs under the interpreter (decided when it is defined).
    """
    # Triton (the interpreter in particular) looks `tl` up in the kernel's module globals.
    global tl
    try:
        import triton
        import triton.language as tl
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err

    @triton.jit
    def sinkhorn_kernel(
        cost_ptr, plan_ptr, iters_ptr, conv_ptr, eps_ptr, budget_ptr,
        n, m, stride_b, stride_n, stride_m, n_stages,
        tol, omega, tiny, check_every, absorb_every,
        BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = tl.arange(0, BLOCK_N)
        cols = tl.arange(0, BLOCK_M)
        row_ok = rows < n
        col_ok = cols < m
        mask = row_ok[:, None] & col_ok[None, :]
        cost_ptrs = cost_ptr + pid.to(tl.int64) * stride_b + rows[:, None] * stride_n + cols[None, :] * stride_m
        a = 1.0 / n
        b = 1.0 / m
        log_a = tl.log(a)
        log_b = tl.log(b)
        # Padded entries read a cost of +inf, so K = 0 there, and keep f = g = 0 and u = v = 1 (never 0
        # or inf): they drop out of every sum without masking the tile.
        f = tl.zeros([BLOCK_N], dtype=tl.float32)
        g = tl.zeros([BLOCK_M], dtype=tl.float32)
        n_iter = pid * 0
        converged = pid * 0  # the last stage's test, stored per problem (defined here: loop-carried)
        for stage in range(n_stages):
            eps_k = tl.load(eps_ptr + stage)
            budget = tl.load(budget_ptr + stage)
            last = stage == n_stages - 1
            # Re-anchor in the log domain (as _log_update): rows, then columns, of exp((f+g-C)/eps_k)
            # sum exactly to a and b, so no row of K underflows whatever eps_k and the cost's scale.
            cost = tl.load(cost_ptrs, mask=mask, other=float("inf"))
            x = (g[None, :] - cost) / eps_k
            x_max = tl.where(row_ok, tl.max(x, axis=1), 0.0)
            x_sum = tl.where(row_ok, tl.sum(tl.exp(x - x_max[:, None]), axis=1), 1.0)
            f = tl.where(row_ok, eps_k * (log_a - x_max - tl.log(x_sum)), 0.0)
            y = (f[:, None] - cost) / eps_k
            y_max = tl.where(col_ok, tl.max(y, axis=0), 0.0)
            y_sum = tl.where(col_ok, tl.sum(tl.exp(y - y_max[None, :]), axis=0), 1.0)
            g = tl.where(col_ok, eps_k * (log_b - y_max - tl.log(y_sum)), 0.0)
            n_iter += 1
            done = pid * 0
            converged = pid * 0
            while (done < budget) & (converged == 0):
                # Reloaded (from L1/L2) rather than kept, and volatile so that the compiler does not hoist
                # the load out of the loop: only K, not the cost too, stays in registers while scaling.
                cost = tl.load(cost_ptrs, mask=mask, other=float("inf"), volatile=True)
                kernel = tl.exp((f[:, None] + g[None, :] - cost) / eps_k)
                u = tl.full([BLOCK_N], 1.0, dtype=tl.float32)
                v = tl.full([BLOCK_M], 1.0, dtype=tl.float32)
                # K v is carried from one iteration to the next: it feeds both the u update and the
                # convergence check, so a check costs no extra mat-vec.
                kv = tl.sum(kernel, axis=1)
                stop = tl.minimum(done + absorb_every, budget)
                while (done < stop) & (converged == 0):
                    u_new = a / tl.where(row_ok, tl.maximum(kv, tiny), a)
                    u = tl.where(row_ok, tl.where(last, u * tl.exp(omega * tl.log(u_new / u)), u_new), 1.0)
                    ktu = tl.sum(kernel * u[:, None], axis=0)
                    v_new = b / tl.where(col_ok, tl.maximum(ktu, tiny), b)
                    v = tl.where(col_ok, tl.where(last, v * tl.exp(omega * tl.log(v_new / v)), v_new), 1.0)
                    kv = tl.sum(kernel * v[None, :], axis=1)
                    done += 1
                    if last & (done % check_every == 0):
                        err = (tl.sum(tl.where(row_ok, tl.abs(u * kv - a), 0.0), axis=0)
                               + tl.sum(tl.where(col_ok, tl.abs(v * ktu - b), 0.0), axis=0))
                        converged = (err < tol).to(tl.int32)
                f = tl.where(row_ok, f + eps_k * tl.log(u), 0.0)
                g = tl.where(col_ok, g + eps_k * tl.log(v), 0.0)
            n_iter += done
        eps_last = tl.load(eps_ptr + n_stages - 1)
        cost = tl.load(cost_ptrs, mask=mask, other=float("inf"))
        plan = tl.exp((f[:, None] + g[None, :] - cost) / eps_last)
        plan_ptrs = plan_ptr + pid.to(tl.int64) * (n * m) + rows[:, None] * m + cols[None, :]
        tl.store(plan_ptrs, plan, mask=mask)
        tl.store(iters_ptr + pid, n_iter)
        tl.store(conv_ptr + pid, converged)

    # TRITON_INTERPRET=1 (read by triton.jit above) makes it an InterpretedFunction.
    return sinkhorn_kernel, type(sinkhorn_kernel).__name__ == "InterpretedFunction"


def fallback_reason(cost: torch.Tensor, interpreted: bool) -> str | None:
    """Why the fused kernel cannot solve this cost (None when it can)."""
    if cost.dtype == torch.float64:
        return "the kernel computes in fp32 and the cost is fp64"
    if cost.requires_grad and torch.is_grad_enabled():
        return "the kernel has no backward and the cost requires grad (align(..., detach_plan=False))"
    if cost.device.type != "cuda" and not interpreted:
        return f"the cost is on {cost.device.type}, and Triton needs a CUDA tensor (or TRITON_INTERPRET=1)"
    _, n, m = cost.shape
    if _next_pow2(n) * _next_pow2(m) > MAX_TILE:
        return f"a {n}x{m} problem pads to more than {MAX_TILE} kernel entries, too many for one program's registers"
    return None


def launch_fused(cost: torch.Tensor, eps: float, max_iter: int, tol: float, **options: Any):
    """Run the fused kernel, unchecked: returns (plan, per-problem iterations, per-problem converged flags).

    No host sync (the kernel is one launch; the schedule table is cached on the device). The caller
    makes sure the kernel applies (:func:`fallback_reason` is None).
    """
    opts = {**SCALING_DEFAULTS, **options}
    opts.pop("warn", None)
    kernel, _ = _build_kernel()
    schedule = anneal_schedule(eps, opts["anneal_factor"], opts["decay"], max_iter)
    budgets = stage_budgets(len(schedule), max_iter, opts["stage_iters"])
    eps_t, budget_t = _stage_table(tuple(schedule), tuple(budgets), cost.device)
    cost = cost.detach().float()
    B, n, m = cost.shape
    plan = torch.empty(B, n, m, dtype=torch.float32, device=cost.device)
    iters = torch.empty(B, dtype=torch.int32, device=cost.device)
    conv = torch.empty(B, dtype=torch.int32, device=cost.device)
    block_n, block_m = max(16, _next_pow2(n)), max(16, _next_pow2(m))
    num_warps = min(_MAX_WARPS, _next_pow2(max(1, block_n * block_m // (32 * _ENTRIES_PER_THREAD))))
    # The kernel checks convergence itself, per problem, so a check costs no sync: every 10 iterations.
    check_every = opts["check_every"] or DEFAULT_CHECK_EVERY
    # The launch goes to the current CUDA device: make it the cost's.
    with torch.cuda.device(cost.device) if cost.is_cuda else contextlib.nullcontext():
        kernel[(B,)](
            cost, plan, iters, conv, eps_t, budget_t,
            n, m, cost.stride(0), cost.stride(1), cost.stride(2), len(schedule),
            float(tol), float(opts["omega"]), torch.finfo(torch.float32).tiny, check_every,
            opts["absorb_every"], BLOCK_N=block_n, BLOCK_M=block_m, num_warps=num_warps,
        )
    return plan, iters, conv


def fused_info(plan: torch.Tensor, iters: torch.Tensor, conv: torch.Tensor, tol: float, warn: bool) -> SolverInfo:
    """The :class:`SolverInfo` of a fused solve (one host sync), warning if a problem did not converge."""
    converged = bool(conv.all())
    n_iter = int(iters.max())
    error = plan_marginal_error(plan).amax()
    if not converged and warn:
        warn_not_converged("triton", float(error), tol, n_iter)
    return SolverInfo(n_iter, error, "triton", converged, iters)


def _sinkhorn_triton(
    cost: torch.Tensor, eps: float = DEFAULT_EPS, max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL, *,
    return_info: bool = False,
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Entropic OT plans with uniform marginals, :func:`mixkit.ot.sinkhorn_torch` fused in one Triton kernel.

    Same algorithm, defaults and keyword options as ``sinkhorn_torch`` (``anneal_factor``, ``decay``,
    ``stage_iters``, ``check_every``, ``absorb_every``, ``omega``, ``warn``); unlike it, convergence
    is checked per problem inside the kernel (every ``check_every`` iterations, 10 by default, at no
    host sync) and each problem stops on its own. Falls back to ``sinkhorn_torch`` (with a warning
    saying why) for fp64 costs, costs that need a gradient (the kernel has no backward), host tensors
    outside the interpreter, and problems whose padded size exceeds :data:`MAX_TILE` (256 x 256).
    The 'default' solver (:mod:`mixkit.ot.default_solver`) adds a plan check and a silent-failure
    guard on top.

    Args:
        cost: Cost (B, n, m), already scaled (see :func:`mixkit.ot.normalize_cost`).
        eps: Entropic regularisation, in the cost's units.
        max_iter: Iteration budget per problem, annealing included.
        tol: Each problem stops when its marginal error (L1, rows plus columns) is below this.
        return_info: Also return a :class:`SolverInfo` with ``n_iter_per_problem``; it costs one host
            sync (and warns if a problem did not converge).
        **options: The epsilon-scaling options of :func:`mixkit.ot.sinkhorn_torch`.

    Returns:
        Plans (B, n, m) in fp32 (fp64 through the fallback), each summing to 1 with rows 1/n and
        columns 1/m; and the info if asked.

    Raises:
        ImportError: triton is not installed.
    """
    _, interpreted = _build_kernel()
    reason = fallback_reason(cost, interpreted)
    if reason is not None:
        warnings.warn(f"sinkhorn_triton: {reason}; solving with sinkhorn_torch instead", stacklevel=3)
        return _sinkhorn_torch(cost, eps, max_iter, tol, return_info=return_info, **options)
    plan, iters, conv = launch_fused(cost, eps, max_iter, tol, **options)
    if not return_info:
        return plan
    return plan, fused_info(plan, iters, conv, tol, options.get("warn", True))


# The checked public entry point (mixkit.ot.entry): validates, then runs the kernel above.
sinkhorn_triton = solver_entry(_sinkhorn_triton, keyword_options_check("sinkhorn_triton"))
