"""The 'default' solver: the fused Triton kernel on CUDA (guarded), the compiled numba loop on the CPU, the
torch solver everywhere else.

The fused kernel (:mod:`mixkit.ot.triton_solver`) is one launch per solve with no host sync, which
is what a training step on a GPU needs; but it is compiled code that no CPU test runs as the GPU
does. So the first solve of each (n, m) shape in a process checks the kernel's plan (finite, marginal
error within tol: one host sync, once per shape); if the check fails or the kernel raises, that
shape goes to the torch solver for the rest of the process, with a warning naming the reason. A
plan that did not converge because the problem is hard (the torch solver does no better) keeps the
kernel and warns. After the first solve, the kernel's per-problem convergence flags are copied to
the host without waiting (pinned memory, an event) and read at a later call: a non-converged solve
warns one step late instead of costing a sync.

On the CPU the default is :mod:`mixkit.ot.numba_solver` (the torch solver's algorithm with each
stage's scaling iterations in one compiled loop: 2-6x faster on alignment-sized problems), tested
on the CPU like the rest; should numba fail to compile or run, the process falls back to the torch
solver with a warning.

``resolve_solver(device)`` says which solver the default runs on a device; ``SolverInfo.solver``
says which one did (fp64 costs on CUDA, costs that need a gradient and problems too large for one
program's registers take the torch solver without a warning: a choice, not a failure).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import warnings
from typing import Any

import torch

from . import numba_solver
from .checks import keyword_options_check
from .defaults import DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL
from .entry import solver_entry
from .info import SolverInfo, warn_not_converged
from .metrics import plan_marginal_error
from .torch_solver import _sinkhorn_torch
from .triton_solver import _build_kernel, fallback_reason, fused_info, launch_fused

ENV_DEFAULT_SOLVER = "MIXKIT_OT_DEFAULT_SOLVER"
FORCEABLE = ("torch", "triton", "numba")
# (n, m) -> None once the kernel's plan passed its check for that shape, else the reason it failed.
_CHECKED_SHAPES: dict[tuple[int, int], str | None] = {}
# Why the numba loop failed in this process (empty until it does; the CPU default is then the torch solver).
_NUMBA_FAILURE: list[str] = []


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve_solver(device: torch.device | str) -> str:
    """Name of the solver the 'default' solver runs on ``device``: 'triton' (the fused kernel) on CUDA
    when triton imports, 'numba' (the compiled loop) on the CPU when numba imports, else 'torch'.

    The environment variable ``MIXKIT_OT_DEFAULT_SOLVER`` ('torch', 'triton' or 'numba') overrides the
    choice on every device: 'torch' keeps a run on the torch solver; 'triton' with ``TRITON_INTERPRET=1``
    runs the CUDA pipeline's logic on CPU tensors (to count its ops and syncs without a GPU). A shape
    whose kernel check failed in this process still goes to 'torch' (see :func:`guard_state`), as does
    every CPU solve once the numba loop has failed; ``SolverInfo.solver`` reports what actually ran.
    """
    forced = os.environ.get(ENV_DEFAULT_SOLVER, "")
    if forced:
        if forced not in FORCEABLE:
            raise ValueError(f"{ENV_DEFAULT_SOLVER}={forced!r}: set it to one of {FORCEABLE}, or unset it")
        importable = {"torch": True, "triton": _triton_importable(), "numba": numba_solver.numba_importable()}
        return forced if importable[forced] else "torch"
    kind = torch.device(device).type
    if kind == "cuda" and _triton_importable():
        return "triton"
    if kind == "cpu" and numba_solver.numba_importable() and not _NUMBA_FAILURE:
        return "numba"
    return "torch"


def guard_state() -> dict[tuple[int, int], str | None]:
    """A copy of the guard's record: per (n, m) shape solved by the kernel in this process, None if its
    plan passed the check, else why the shape now goes to the torch solver."""
    return dict(_CHECKED_SHAPES)


def reset_guard() -> None:
    """Forget which shapes were checked (the next solve of each checks again) and any numba failure."""
    _CHECKED_SHAPES.clear()
    _NUMBA_FAILURE.clear()
    _PENDING.clear()


class _LazyFlags:
    """Non-convergence flags of earlier fused solves, copied to the host without a sync and read when ready."""

    def __init__(self) -> None:
        self._pending: list[tuple[torch.Tensor, Any, float]] = []

    def add(self, conv: torch.Tensor, tol: float) -> None:
        # conv holds 1 per converged problem: its minimum is 0 when any failed. The same ops run on CPU
        # tensors as on CUDA (only the pinning and the asynchrony differ), so op counts on CPU are CUDA's.
        on_cuda = conv.is_cuda
        host = torch.empty((), dtype=conv.dtype, pin_memory=on_cuda)
        host.copy_(conv.amin(), non_blocking=on_cuda)
        event = None
        if on_cuda:
            event = torch.cuda.Event()
            event.record()
        self._pending.append((host, event, tol))

    def poll(self) -> None:
        ready = [p for p in self._pending if p[1] is None or p[1].query()]
        self._pending = [p for p in self._pending if p not in ready]
        for host, _, tol in ready:
            if int(host.numpy()) == 0:  # a host read of a finished copy: not even a dispatched op
                warnings.warn(
                    f"default OT solver: the fused kernel did not converge to tol {tol:g} on some problems of "
                    "an earlier solve; raise max_iter or eps, or pass return_info=True to see SolverInfo.converged",
                    RuntimeWarning, stacklevel=4)

    def clear(self) -> None:
        self._pending.clear()


_PENDING = _LazyFlags()


def _slack(tol: float) -> float:
    # The kernel tests u * (K v); the plan re-formed from the potentials adds fp32 rounding on top.
    return max(2 * tol, tol + 1e-5)


def _check_first_solve(cost, plan, eps, max_iter, tol, options) -> tuple[str | None, Any]:
    """The one-sync check of a shape's first fused plan: (reason to fall back or None, torch's solve if run)."""
    error = float(plan_marginal_error(plan).amax())  # NaN or Inf for a non-finite plan
    if not math.isfinite(error):
        return "returned a plan with NaN or Inf", None
    if error <= _slack(tol):
        return None, None
    # Over tolerance: the kernel's fault only if the torch solver converges on the same cost.
    torch_out = _sinkhorn_torch(cost, eps, max_iter, tol, return_info=True, **{**options, "warn": False})
    if float(torch_out[1].marginal_error) <= _slack(tol):
        return f"left a marginal error of {error:.3g} where the torch solver reaches tol {tol:g}", torch_out
    if options.get("warn", True):  # a hard problem for both: keep the kernel, report the plan
        warn_not_converged("triton", error, tol, max_iter)
    return None, None


def _solve_torch(cost, eps, max_iter, tol, return_info, options):
    return _sinkhorn_torch(cost, eps, max_iter, tol, return_info=return_info, **options)


def _solve_numba(cost, eps, max_iter, tol, return_info, options):
    if numba_solver.fallback_reason(cost) is not None:  # a gradient, another device: the torch path's job
        return _solve_torch(cost, eps, max_iter, tol, return_info, options)
    try:
        plan, iters, conv = numba_solver.launch_fused(cost, eps, max_iter, tol, **options)
    except Exception as err:  # noqa: BLE001  (any failure of compiled code falls back, with its reason)
        _NUMBA_FAILURE.append(f"{type(err).__name__}: {err}")
        warnings.warn(f"default OT solver: the compiled numba loop raised {_NUMBA_FAILURE[0]}; CPU solves use the "
                      "torch solver from now on (solver='torch' chooses it outright)", RuntimeWarning, stacklevel=3)
        return _solve_torch(cost, eps, max_iter, tol, return_info, options)
    return numba_solver.finish(plan, iters, conv, tol, warn=options.get("warn", True), return_info=return_info)


def _sinkhorn_default(
    cost: torch.Tensor, eps: float = DEFAULT_EPS, max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL, *,
    return_info: bool = False,
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Entropic OT plans with uniform marginals: the fused kernel on CUDA (guarded), the compiled numba loop on
    the CPU, the torch solver elsewhere.

    Host syncs on CUDA through the kernel: one on the first solve of each (n, m) shape (the plan
    check), none after (non-convergence is read lazily and warned one call late), one more with
    ``return_info``. Through the torch solver: see :func:`mixkit.ot.sinkhorn_torch` (at most 10).

    Args:
        cost: Cost (B, n, m), already scaled (see :func:`mixkit.ot.normalize_cost`).
        eps: Entropic regularisation, in the cost's units.
        max_iter: Iteration budget, annealing included.
        tol: Marginal error (L1, rows plus columns) to reach.
        return_info: Also return a :class:`SolverInfo`; its ``solver`` is 'triton', 'numba' or 'torch'.
        **options: The epsilon-scaling options of :func:`mixkit.ot.sinkhorn_torch`.

    Returns:
        Plans (B, n, m), and the info if asked.
    """
    warn = options.get("warn", True)
    _PENDING.poll()
    shape = tuple(cost.shape[1:])
    chosen = resolve_solver(cost.device)
    if chosen == "numba":
        return _solve_numba(cost, eps, max_iter, tol, return_info, options)
    if chosen != "triton" or _CHECKED_SHAPES.get(shape) is not None:
        return _solve_torch(cost, eps, max_iter, tol, return_info, options)
    if fallback_reason(cost, _build_kernel()[1]) is not None:  # fp64, grad, too large: the torch path's job
        return _solve_torch(cost, eps, max_iter, tol, return_info, options)
    torch_out, first = None, shape not in _CHECKED_SHAPES
    try:
        plan, iters, conv = launch_fused(cost, eps, max_iter, tol, **options)
    except Exception as err:  # noqa: BLE001  (any failure of compiled code falls back, with its reason)
        reason = f"raised {type(err).__name__}: {err}"
    else:
        reason = None
        if first:  # the one sync per shape; it also reports a plan that did not converge
            reason, torch_out = _check_first_solve(cost, plan, eps, max_iter, tol, options)
            _CHECKED_SHAPES[shape] = reason
    if reason is not None:
        _CHECKED_SHAPES[shape] = reason
        warnings.warn(f"default OT solver: the fused Triton kernel {reason} on a {shape[0]}x{shape[1]} problem; "
                      "that shape is solved by the torch solver from now on (solver='torch' chooses it outright)",
                      RuntimeWarning, stacklevel=3)
        if torch_out is not None:
            return torch_out if return_info else torch_out[0]
        return _solve_torch(cost, eps, max_iter, tol, return_info, options)
    if return_info:
        return plan, fused_info(plan, iters, conv, tol, warn and not first)
    if warn and not first:
        _PENDING.add(conv, tol)
    return plan


# The checked public entry point (mixkit.ot.entry): validates, then runs the kernel above.
sinkhorn_default = solver_entry(_sinkhorn_default, keyword_options_check("sinkhorn_default"))
