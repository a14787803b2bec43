"""mixkit.ot: batched entropic optimal transport for feature alignment (knows nothing of models)."""

from .align import DIRECTIONS, align, barycentric_projection, check_plan, transport_plan
from .contract import (
    DEFAULT_EPS,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    SolverInfo,
    anneal_schedule,
    default_check_every,
    stage_budgets,
)
from .cost import COST_SCALES, cost_scale, normalize_cost, pairwise_cost, squared_euclidean_cost
from .default_solver import guard_state, reset_guard, resolve_solver, sinkhorn_default
from .exact import emd
from .metrics import effective_partners, marginal_error, relative_transport_cost, transport_cost
from .numba_solver import sinkhorn_numba
from .pot_solver import sinkhorn_pot
from .reference import reference_cost, sinkhorn_reference
from .registry import Solver, get_solver, list_solvers, register_solver
from .torch_solver import sinkhorn_torch
from .triton_solver import sinkhorn_triton

__all__ = [
    "COST_SCALES", "DEFAULT_EPS", "DEFAULT_MAX_ITER", "DEFAULT_TOL", "DIRECTIONS", "Solver", "SolverInfo",
    "align", "anneal_schedule", "barycentric_projection", "check_plan", "cost_scale", "default_check_every",
    "effective_partners", "emd", "get_solver", "guard_state", "list_solvers", "marginal_error",
    "normalize_cost", "pairwise_cost", "reference_cost", "register_solver", "relative_transport_cost",
    "reset_guard", "resolve_solver", "sinkhorn_default", "sinkhorn_numba", "sinkhorn_pot", "sinkhorn_reference",
    "sinkhorn_torch", "sinkhorn_triton", "squared_euclidean_cost", "stage_budgets", "transport_cost",
    "transport_plan",
]
