"""The 'numba' solver (the CPU default): the torch solver's algorithm, so the same plans and per-problem
iteration counts as sinkhorn_torch in fp64, POT's plans at a tight tolerance, and its fallbacks."""

import numpy as np
import ot
import pytest
import torch
from ot_features import real_features

pytest.importorskip("numba")

from mixkit.ot import (  # noqa: E402  (after the skip)
    get_solver,
    list_solvers,
    marginal_error,
    normalize_cost,
    sinkhorn_numba,
    sinkhorn_torch,
    squared_euclidean_cost,
    transport_plan,
)


def random_cost(B=5, n=9, m=11, C=8, seed=0, dtype=torch.float64, relu=False):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(B, n, C, generator=g, dtype=dtype), torch.randn(B, m, C, generator=g, dtype=dtype)
    if relu:  # sparse, partly identical points, like post-ReLU feature maps: slower, spread-out convergence
        x, y = x.relu(), y.relu()
    return normalize_cost(squared_euclidean_cost(x, y))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"omega": 1.0},  # plain Sinkhorn in the last stage
        {"omega": 1.8, "check_every": 20},  # generic pow() relaxation, another check period
        {"anneal_factor": 1.0},  # no annealing: one long stage
        {"absorb_every": 7},  # many absorptions (the kernel re-formed from the potentials)
        {"max_iter": 40},  # the budget runs out: unconverged problems
    ],
    ids=["default", "omega1", "omega1.8", "no-anneal", "absorb7", "short"],
)
def test_same_plans_and_iterations_as_the_torch_solver_in_fp64(options):
    cost = random_cost(B=6, n=13, m=10, seed=3, relu=True)
    options = dict(options)
    max_iter = options.pop("max_iter", 1000)
    plan, info = sinkhorn_numba(cost, 0.05, max_iter, 1e-3, return_info=True, warn=False, **options)
    ref, ref_info = sinkhorn_torch(cost, 0.05, max_iter, 1e-3, return_info=True, warn=False, **options)
    assert plan.dtype == torch.float64 and info.solver == "numba"
    assert info.n_iter_per_problem.tolist() == ref_info.n_iter_per_problem.tolist()
    assert info.n_iter == ref_info.n_iter and info.converged == ref_info.converged
    torch.testing.assert_close(plan, ref, rtol=1e-9, atol=1e-12)


def test_real_features_fp32_agree_with_the_torch_solver():
    feats = real_features()[:32]
    cost = normalize_cost(squared_euclidean_cost(feats[:16], feats[16:]))
    plan, info = sinkhorn_numba(cost, return_info=True)
    ref = sinkhorn_torch(cost)
    assert plan.dtype == torch.float32 and info.converged
    assert marginal_error(plan).max() < 1e-3
    # fp32 anchoring in both, fp64 sums here: the plans differ by rounding, far below the tolerance.
    assert (plan - ref).abs().max() * 49 < 1e-4


def test_agrees_with_pot_at_a_tight_tolerance():
    cost = random_cost(B=4, n=9, m=11, seed=5)
    plan = sinkhorn_numba(cost, 0.2, 20000, 1e-10)
    for b in range(cost.shape[0]):
        n, m = cost.shape[1:]
        expected = ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), cost[b].numpy(), 0.2,
                               method="sinkhorn_log", numItermax=20000, stopThr=1e-12)
        np.testing.assert_allclose(plan[b].numpy() * n, expected * n, atol=1e-6)


def test_warns_when_a_problem_does_not_converge():
    cost = random_cost(relu=True)
    with pytest.warns(RuntimeWarning, match="numba OT solver did not converge"):
        sinkhorn_numba(cost, 0.05, 40, 1e-6)


def test_a_cost_that_needs_a_gradient_takes_the_torch_solver():
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 7, 4, dtype=torch.float64)
    cost = normalize_cost(squared_euclidean_cost(x, y))
    plan, info = sinkhorn_numba(cost, return_info=True)
    assert info.solver == "torch"
    (plan * cost).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_registered_and_reachable_by_name():
    assert "numba" in list_solvers()
    x, y = torch.randn(3, 8, 5), torch.randn(3, 8, 5)
    plan, info = transport_plan(x, y, solver="numba", return_info=True)
    assert info.solver == "numba" and get_solver("numba").cost_scale == "std"
    torch.testing.assert_close(plan, transport_plan(x, y, solver="torch"), rtol=1e-4, atol=1e-7)
