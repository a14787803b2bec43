"""Solvers looked up by name (:class:`mixkit.registry.Registry`); each keeps one contract:
``solve(cost, eps, max_iter, tol, *, return_info=False) -> plan``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..registry import Registry
from .checks import check_solver_args
from .cost import CostScale
from .default_solver import _sinkhorn_default, sinkhorn_default
from .defaults import DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL
from .numba_solver import _sinkhorn_numba, sinkhorn_numba
from .pot_solver import DEFAULT_POT_MAX_ITER, DEFAULT_POT_TOL, _sinkhorn_pot, sinkhorn_pot
from .reference import (
    REFERENCE_EPS,
    REFERENCE_MAX_ITER,
    REFERENCE_TOL,
    _sinkhorn_reference,
    sinkhorn_reference,
)
from .torch_solver import _sinkhorn_torch, sinkhorn_torch
from .triton_solver import _sinkhorn_triton, sinkhorn_triton

SolveFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Solver:
    """A named entropic OT solver and the defaults it is meant to run with.

    Attributes:
        name: Registry name.
        solve: ``solve(cost[B,n,m], eps, max_iter, tol, *, return_info=False) -> plan[B,n,m]``,
            uniform marginals 1/n and 1/m, validating its input (:func:`mixkit.ot.entry.solver_entry`).
        eps: Default entropic regularisation, in units of the cost after ``cost_scale``.
        max_iter: Default iteration budget.
        tol: Default stopping tolerance (each solver's own criterion).
        cost_scale: How :func:`mixkit.ot.normalize_cost` scales the cost before solving.
        description: One line for listings and ``--help``.
        differentiable: Whether a plan can carry gradients back to the cost
            (``align(..., detach_plan=False)``).
        kernel: The same solve without the input checks (the solver module's private ``_sinkhorn_<name>``),
            which :func:`mixkit.ot.transport_plan` runs after validating once itself; None: ``solve``.
    """

    name: str
    solve: SolveFn
    eps: float
    max_iter: int
    tol: float
    cost_scale: CostScale
    description: str
    differentiable: bool = True
    kernel: SolveFn | None = None

    def __call__(self, cost: torch.Tensor, eps: Any = None, max_iter: Any = None, tol: Any = None,
                 **kwargs: Any) -> Any:
        """Solve with this solver's defaults for the arguments left None (validated by ``solve``)."""
        return self.solve(
            cost,
            self.eps if eps is None else eps,
            self.max_iter if max_iter is None else max_iter,
            self.tol if tol is None else tol,
            **kwargs,
        )

    def resolve_args(self, eps: Any, max_iter: Any, tol: Any) -> tuple[float, int, float]:
        """eps, max_iter and tol with this solver's defaults for None, validated."""
        return check_solver_args(self.eps if eps is None else eps, self.max_iter if max_iter is None else max_iter,
                                 self.tol if tol is None else tol)

    def solve_unchecked(self, cost: torch.Tensor, eps: float, max_iter: int, tol: float, **kwargs: Any) -> Any:
        """Run the kernel without the input checks (the caller validated the cost and the arguments)."""
        return (self.kernel or self.solve)(cost, eps, max_iter, tol, **kwargs)


_SOLVERS: Registry[Solver] = Registry("OT solver")


def register_solver(solver: Solver, *, overwrite: bool = False) -> Solver:
    """Add a solver to the registry under ``solver.name`` (a taken name raises unless ``overwrite``)."""
    if not isinstance(solver, Solver):
        raise TypeError(f"register_solver takes a mixkit.ot.Solver, got {type(solver).__name__}")
    return _SOLVERS.register(solver.name, solver, overwrite=overwrite)


def get_solver(name: str | Solver) -> Solver:
    """The registered solver called ``name`` (a :class:`Solver` passes through).

    Raises:
        TypeError: ``name`` is neither a string nor a Solver.
        ValueError: No solver has that name (the message lists the names).
    """
    if isinstance(name, Solver):
        return name
    if not isinstance(name, str):
        raise TypeError(f"solver must be a registered solver name (str) or a mixkit.ot.Solver, got "
                        f"{type(name).__name__} {name!r}; available: {list_solvers()}")
    return _SOLVERS.get(name)


def list_solvers() -> list[str]:
    """Names of the registered solvers."""
    return _SOLVERS.list()


for _solver in (
    Solver("default", sinkhorn_default, DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, "std",
           "the fused Triton kernel on CUDA (guarded: checked once per shape, torch on failure), the compiled "
           "numba loop on the CPU, torch elsewhere", kernel=_sinkhorn_default),
    Solver("torch", sinkhorn_torch, DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, "std",
           "batched epsilon-scaling Sinkhorn in torch: converged and sharp, at most 10 host syncs on CUDA",
           kernel=_sinkhorn_torch),
    Solver("pot", sinkhorn_pot, DEFAULT_EPS, DEFAULT_POT_MAX_ITER, DEFAULT_POT_TOL, "std",
           "POT's log-domain Sinkhorn (ot.solve_batch) on the host, the reference implementation (no gradient)",
           differentiable=False, kernel=_sinkhorn_pot),
    Solver("reference", sinkhorn_reference, REFERENCE_EPS, REFERENCE_MAX_ITER, REFERENCE_TOL, "none",
           "the paper's published solver: raw cost, eps 0.1, at most 100 log-domain iterations",
           kernel=_sinkhorn_reference),
    Solver("triton", sinkhorn_triton, DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, "std",
           "the torch solver fused in one Triton CUDA kernel, per-problem early exit, no guard",
           kernel=_sinkhorn_triton),
    Solver("numba", sinkhorn_numba, DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL, "std",
           "the torch solver with each stage's scaling iterations in one compiled CPU loop per problem (numba)",
           kernel=_sinkhorn_numba),
):
    register_solver(_solver)
