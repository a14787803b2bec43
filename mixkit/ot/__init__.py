"""mixkit.ot: batched entropic optimal transport for feature alignment (knows nothing of models).

``transport_plan(a, b, solver=...)`` gives the plans between batched point sets, ``align`` carries one set
onto the other's positions; the solvers are looked up by name (``list_solvers()``), and each one's checked
entry point is also public (``sinkhorn_<name>(cost, eps, max_iter, tol)``).

One rule for checked and unchecked functions: a public function validates its inputs, once; its unchecked
core is a private ``_name`` in the same module (``_transport_plan``, ``_project``, ``_sinkhorn_torch``, ...),
which mixkit's own callers that validated already import. Internals (the eps schedule, the default solver's
guard, the checks) are importable from their modules: ``defaults``, ``info``, ``schedule``, ``checks``,
``entry``, ``default_solver``.
"""

from .align import DIRECTIONS, PROJECTIONS, align, barycentric_projection, transport_plan
from .checks import check_plan
from .cost import COST_SCALES, normalize_cost, pairwise_cost, squared_euclidean_cost
from .default_solver import sinkhorn_default
from .defaults import DEFAULT_EPS, DEFAULT_MAX_ITER, DEFAULT_TOL
from .exact import emd
from .info import SolverInfo
from .metrics import effective_partners, marginal_error, relative_transport_cost, transport_cost
from .numba_solver import sinkhorn_numba
from .pot_solver import sinkhorn_pot
from .reference import sinkhorn_reference
from .registry import Solver, get_solver, list_solvers, register_solver
from .torch_solver import sinkhorn_torch
from .triton_solver import sinkhorn_triton

__all__ = [
    "COST_SCALES", "DEFAULT_EPS", "DEFAULT_MAX_ITER", "DEFAULT_TOL", "DIRECTIONS", "PROJECTIONS", "Solver",
    "SolverInfo", "align", "barycentric_projection", "check_plan", "effective_partners", "emd", "get_solver",
    "list_solvers", "marginal_error", "normalize_cost", "pairwise_cost", "register_solver",
    "relative_transport_cost", "sinkhorn_default", "sinkhorn_numba", "sinkhorn_pot", "sinkhorn_reference",
    "sinkhorn_torch", "sinkhorn_triton", "squared_euclidean_cost", "transport_cost", "transport_plan",
]
