"""Solvers looked up by name; each keeps one contract: ``solve(cost, eps, max_iter, tol) -> plan``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .cost import CostScale
from .pot_solver import DEFAULT_POT_MAX_ITER, DEFAULT_POT_TOL, sinkhorn_pot
from .reference import REFERENCE_EPS, REFERENCE_MAX_ITER, REFERENCE_TOL, sinkhorn_reference
from .torch_solver import DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, sinkhorn_torch
from .triton_solver import sinkhorn_triton

SolveFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Solver:
    """A named entropic OT solver and the defaults it is meant to run with.

    Attributes:
        name: Registry name.
        solve: ``solve(cost[B,n,m], eps, max_iter, tol, *, return_info=False) -> plan[B,n,m]``,
            uniform marginals 1/n and 1/m.
        eps: Default entropic regularisation, in units of the cost after ``cost_scale``.
        max_iter: Default iteration budget.
        tol: Default stopping tolerance (each solver's own criterion).
        cost_scale: How :func:`mixkit.ot.normalize_cost` scales the cost before solving.
        description: One line for listings and ``--help``.
    """

    name: str
    solve: SolveFn
    eps: float
    max_iter: int
    tol: float
    cost_scale: CostScale
    description: str

    def __call__(self, cost: torch.Tensor, eps: float | None = None, max_iter: int | None = None,
                 tol: float | None = None, **kwargs) -> torch.Tensor:
        return self.solve(
            cost,
            self.eps if eps is None else eps,
            self.max_iter if max_iter is None else max_iter,
            self.tol if tol is None else tol,
            **kwargs,
        )


_SOLVERS: dict[str, Solver] = {}


def register_solver(solver: Solver, *, overwrite: bool = False) -> Solver:
    """Add a solver to the registry under ``solver.name``."""
    if solver.name in _SOLVERS and not overwrite:
        raise ValueError(f"a solver named {solver.name!r} is already registered; pass overwrite=True to replace it")
    _SOLVERS[solver.name] = solver
    return solver


def get_solver(name: str | Solver) -> Solver:
    """The registered solver called ``name`` (a :class:`Solver` passes through)."""
    if isinstance(name, Solver):
        return name
    if name not in _SOLVERS:
        raise ValueError(f"unknown OT solver {name!r}; available: {list_solvers()}")
    return _SOLVERS[name]


def list_solvers() -> list[str]:
    """Names of the registered solvers."""
    return sorted(_SOLVERS)


register_solver(Solver(
    "torch", sinkhorn_torch, DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, "std",
    "batched epsilon-scaling Sinkhorn in torch (default): converged and sharp, no host sync on CUDA",
))
register_solver(Solver(
    "pot", sinkhorn_pot, DEFAULT_EPS, DEFAULT_POT_MAX_ITER, DEFAULT_POT_TOL, "std",
    "POT's log-domain Sinkhorn (ot.solve_batch), the reference implementation",
))
register_solver(Solver(
    "reference", sinkhorn_reference, REFERENCE_EPS, REFERENCE_MAX_ITER, REFERENCE_TOL, "none",
    "the paper's published solver: raw cost, eps 0.1, at most 100 log-domain iterations",
))
register_solver(Solver(
    "triton", sinkhorn_triton, DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, "std",
    "the torch solver fused in one Triton CUDA kernel, per-problem early exit (opt-in, not yet measured on a GPU)",
))
