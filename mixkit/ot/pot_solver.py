"""POT as the reference entropic solver: ``ot.solve_batch`` where POT has it, else ``ot.sinkhorn`` per problem."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .defaults import DEFAULT_EPS
from .entry import solver_entry
from .info import SolverInfo
from .metrics import plan_marginal_error

POT_MISSING = ("POT is not installed: the 'pot' solver and mixkit.ot.emd need it. Install it with "
               "`pip install 'mixkit[pot]'` (or `pip install pot`), or pick another solver ('default', 'torch', 'numba')")

DEFAULT_POT_MAX_ITER = 1000
DEFAULT_POT_TOL = 1e-4


def import_pot():
    """POT's ``ot`` module, or an ImportError that says how to install it (POT is an optional extra)."""
    try:
        import ot
    except ImportError as exc:
        raise ImportError(POT_MISSING) from exc
    return ot


def _solve_batch():
    try:
        from ot.batch import solve_batch
    except ImportError:  # POT < 0.9.6 has no batched solver
        return None
    return solve_batch


def _sinkhorn_pot(
    cost: torch.Tensor, eps: float = DEFAULT_EPS, max_iter: int = DEFAULT_POT_MAX_ITER, tol: float = DEFAULT_POT_TOL, *,
    batched: bool = True,
    warn: bool = True,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Log-domain Sinkhorn plans from POT, on the host in the cost's precision (fp32 at least).

    Args:
        cost: Cost (B, n, m).
        eps: Entropic regularisation (POT's ``reg``).
        max_iter: POT's iteration limit.
        tol: POT's stopping threshold (its own criterion: the L2 norm of the row-marginal error for
            ``solve_batch``, checked every 10 iterations).
        batched: Use ``ot.solve_batch`` (if the installed POT has it); False loops ``ot.sinkhorn``.
        warn: Warn (RuntimeWarning) when POT stopped at ``max_iter`` before its criterion was met.
        return_info: Also return a :class:`SolverInfo` (``converged``: POT stopped before ``max_iter``).

    Returns:
        Plans (B, n, m) on the cost's device and dtype (fp32 at least).
    """
    ot = import_pot()
    out_dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    np_cost = cost.detach().to("cpu", out_dtype).numpy()
    B, n, m = np_cost.shape
    solve_batch = _solve_batch() if batched else None
    if solve_batch is not None:
        res = solve_batch(np_cost, reg=eps, max_iter=max_iter, tol=tol, method="log_sinkhorn", grad="detach")
        plan, n_iter = np.asarray(res.plan), int(res.log["n_iter"]) + 1
    else:
        a, b = np.full(n, 1.0 / n, dtype=np_cost.dtype), np.full(m, 1.0 / m, dtype=np_cost.dtype)
        plans, n_iter = [], 0
        with warnings.catch_warnings():  # POT's own per-problem warning: one warning below says it for all
            warnings.filterwarnings("ignore", message=".*did not converge.*")
            for c in np_cost:
                p, log = ot.sinkhorn(a, b, c, eps, method="sinkhorn_log", numItermax=max_iter, stopThr=tol, log=True)
                plans.append(p)
                n_iter = max(n_iter, int(log["niter"]) + 1)  # POT logs the last loop index
        plan = np.stack(plans)
    plan_t = torch.from_numpy(np.ascontiguousarray(plan)).to(cost.device, out_dtype)
    converged = n_iter < max_iter
    error = plan_marginal_error(plan_t).amax() if return_info or not converged else None
    if not converged and warn:
        warnings.warn(
            f"pot OT solver did not converge: POT stopped at max_iter={max_iter} before its criterion (L2 norm of the "
            f"row-marginal error < tol {tol:g}); the plan's marginal error (L1, rows plus columns) is {float(error):.3g}. "
            "Raise max_iter or eps, or pass return_info=True to read SolverInfo.converged instead",
            RuntimeWarning, stacklevel=3)
    if not return_info:
        return plan_t
    return plan_t, SolverInfo(n_iter, error, "pot", converged)


# The checked public entry point (mixkit.ot.entry): validates, then runs the kernel above.
sinkhorn_pot = solver_entry(_sinkhorn_pot)
