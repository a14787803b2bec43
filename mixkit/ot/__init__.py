"""mixkit.ot: batched entropic optimal transport for feature alignment (knows nothing of models)."""

from .align import align, barycentric_projection, transport_plan
from .cost import COST_SCALES, cost_scale, normalize_cost, squared_euclidean_cost
from .exact import emd
from .metrics import effective_partners, marginal_error, relative_transport_cost, transport_cost
from .pot_solver import sinkhorn_pot
from .reference import reference_cost, sinkhorn_reference
from .registry import Solver, get_solver, list_solvers, register_solver
from .torch_solver import (
    DEFAULT_EPS,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    SolverInfo,
    anneal_schedule,
    sinkhorn_torch,
)
from .triton_solver import sinkhorn_triton

__all__ = [
    "COST_SCALES", "DEFAULT_EPS", "transport_plan", "DEFAULT_MAX_ITER", "DEFAULT_TOL", "Solver", "SolverInfo", "align",
    "anneal_schedule", "barycentric_projection", "cost_scale", "effective_partners", "emd", "get_solver",
    "list_solvers", "marginal_error", "normalize_cost", "reference_cost", "register_solver",
    "relative_transport_cost", "sinkhorn_pot", "sinkhorn_reference", "sinkhorn_torch",
    "sinkhorn_triton",
    "squared_euclidean_cost", "transport_cost",
]
