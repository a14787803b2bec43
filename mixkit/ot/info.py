"""What a solve reports: ``SolverInfo``, and the warning every solver gives when it stops unconverged."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

__all__ = ["SolverInfo", "warn_not_converged"]


class SolverInfo(NamedTuple):
    """Diagnostics of one solve.

    Attributes:
        n_iter: Scaling iterations run, annealing stages included (the batch's largest count).
        marginal_error: Largest :func:`mixkit.ot.marginal_error` (rows plus columns, L1) over the
            batch, a 0-dim tensor so CUDA callers are not forced to synchronise.
        solver: Name of the solver that produced the plan ('torch', 'numba', 'triton', 'pot', 'reference'):
            for the 'default' solver, the one it chose or fell back to.
        converged: Whether the solver's own stopping test passed within ``max_iter``.
        n_iter_per_problem: (B,) int32 iterations per problem where the solver stops each problem on
            its own (the torch solver and the fused kernel), else None.
    """

    n_iter: int
    marginal_error: torch.Tensor
    solver: str = ""
    converged: bool = True
    n_iter_per_problem: torch.Tensor | None = None


def warn_not_converged(solver: str, error: float, tol: float, n_iter: int, *, stacklevel: int = 4) -> None:
    """Warns that a plan is not a coupling to ``tol``; ``stacklevel`` 4 names the caller of a solver's public
    function when the solver's own body calls this (one more per helper in between)."""
    warnings.warn(
        f"{solver} OT solver did not converge: marginal error {error:.3g} > tol {tol:g} after {n_iter} "
        "iterations; the plan is not a coupling to that tolerance. Raise max_iter or eps (a too small eps "
        "needs many iterations), or pass return_info=True to read SolverInfo.converged instead",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
