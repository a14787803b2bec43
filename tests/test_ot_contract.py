"""The solver contract: exact costs under shifts and scales, reported non-convergence, honoured budgets,
argument types, the align vocabulary and its bad inputs, the periodic-check (CUDA) schedule on the CPU."""

import warnings

import numpy as np
import pytest
import torch
from dispatch_counter import DispatchCounter

from mixkit.ot import (
    align,
    barycentric_projection,
    get_solver,
    marginal_error,
    normalize_cost,
    sinkhorn_pot,
    sinkhorn_torch,
    squared_euclidean_cost,
    transport_plan,
)
from mixkit.ot.schedule import default_check_every, stage_budgets


def points(B=4, n=12, m=10, C=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, C, generator=g, dtype=dtype), torch.randn(B, m, C, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- costs exact under shifts and scales


@pytest.mark.parametrize(
    ("shift", "scale"),
    [(300.0, 1.0), (1e4, 1.0), (0.0, 1e9), (0.0, 1e18), (0.0, 1e-20), (300.0, 1e6)],
    ids=["shift-300", "shift-1e4", "scale-1e9", "scale-1e18", "scale-1e-20", "shift-and-scale"],
)
def test_fp32_plans_of_shifted_and_scaled_features_match_fp64(shift, scale):
    """A plan depends only on the features' relative geometry: fp32 must see it as fp64 does."""
    x, y = points(dtype=torch.float64)
    reference = transport_plan(x, y, solver="torch", tol=1e-6, max_iter=5000)  # fp64, unshifted
    moved_x, moved_y = ((x + shift) * scale).float(), ((y + shift) * scale).float()
    plan, info = transport_plan(moved_x, moved_y, solver="torch", tol=1e-6, max_iter=5000, return_info=True)
    assert plan.dtype == torch.float32 and info.converged
    # fp32 features far from the origin are themselves rounded (shift 1e4: 1e-3 of the unit spread).
    atol = 2e-2 if shift >= 1e4 else 2e-3
    assert (plan.double() - reference).abs().max() * 12 < atol
    pot = sinkhorn_pot(normalize_cost(squared_euclidean_cost(x, y)), 0.05, 20000, 1e-9)
    assert (plan.double() - pot).abs().max() * 12 < atol


def test_raw_cost_of_huge_features_is_an_error_not_a_silent_inf():
    x, y = points()
    cost = squared_euclidean_cost(x * 1e9, y * 1e9)  # 1e18-sized distances fit fp32
    torch.testing.assert_close(cost, squared_euclidean_cost(x.double(), y.double()).float() * 1e18, rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="overflow"):
        squared_euclidean_cost(x * 1e20, y * 1e20)
    # ...but the scaled cost a solver sees needs no raw value: the plan still comes.
    assert torch.isfinite(transport_plan(x * 1e20, y * 1e20)).all()


# --------------------------------------------------------------------------- convergence and budgets


@pytest.mark.parametrize("max_iter", [1, 2, 5, 7, 8, 12, 40])
def test_max_iter_is_honoured_and_short_budgets_are_reported(max_iter):
    x, y = points()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan, info = transport_plan(x, y, solver="torch", max_iter=max_iter, return_info=True)
    assert info.n_iter <= max_iter
    converged = marginal_error(plan).max() <= 1e-3
    assert info.converged == converged
    assert any("did not converge" in str(w.message) for w in caught) == (not converged)


def test_stage_budgets_spend_exactly_max_iter():
    for n_stages in range(1, 9):
        for max_iter in range(n_stages, 60):
            budgets = stage_budgets(n_stages, max_iter, 4)
            assert sum(budgets) + n_stages == max_iter and min(budgets) >= 0


def test_too_small_eps_is_reported_on_the_default_path():
    x, y = points()
    with pytest.warns(RuntimeWarning, match="did not converge"):
        transport_plan(x, y, eps=1e-4, max_iter=200)


# --------------------------------------------------------------------------- argument types


@pytest.mark.parametrize(
    "eps", [np.float32(0.05), np.float64(0.05), torch.tensor(0.05), torch.tensor(0.05, dtype=torch.float64)],
    ids=["np.float32", "np.float64", "0-d tensor", "0-d fp64 tensor"],
)
def test_eps_as_any_real_scalar_is_accepted(eps):
    x, y = points()
    torch.testing.assert_close(transport_plan(x, y, eps=eps), transport_plan(x, y, eps=0.05), rtol=0, atol=1e-6)
    plan = get_solver("torch")(normalize_cost(squared_euclidean_cost(x, y)), eps, np.int64(1000), np.float32(1e-3))
    assert marginal_error(plan).max() <= 1.01e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": "0.05"}, "eps must be a real number, got str"),
        ({"eps": [0.05]}, "eps must be a real number, got list"),
        ({"eps": torch.tensor([0.05])}, "eps must be a real number or a 0-d real tensor"),
        ({"eps": True}, "eps must be a real number, got bool"),
        ({"max_iter": 10.5}, "max_iter must be an integer, got float"),
        ({"tol": None, "max_iter": "100"}, "max_iter must be an integer, got str"),
    ],
)
def test_arguments_of_the_wrong_type_raise_type_errors_naming_the_type(kwargs, match):
    x, y = points()
    with pytest.raises(TypeError, match=match):
        transport_plan(x, y, **kwargs)


def test_meta_tensors_are_a_clear_error_in_every_entry_point():
    x, y = (t.to("meta") for t in points())
    for fn in (transport_plan, align):
        with pytest.raises(ValueError, match="a is on the meta device.*materialise"):
            fn(x, y)
    with pytest.raises(ValueError, match="plan is on the meta device"):
        barycentric_projection(torch.empty(2, 3, 3, device="meta"), torch.empty(2, 3, 4, device="meta"))


def test_solver_of_the_wrong_type_is_a_type_error_naming_the_argument():
    with pytest.raises(TypeError, match=r"solver must be .* got list \['torch'\]"):
        get_solver(["torch"])
    x, y = points()
    with pytest.raises(TypeError, match="solver must be"):
        transport_plan(x, y, solver=["torch"])


# --------------------------------------------------------------------------- align: vocabulary and bad input


def test_align_directions_follow_the_mixing_vocabulary():
    x, y = points(B=2, n=7, m=5)
    plan = transport_plan(x, y)
    torch.testing.assert_close(align(x, y, direction="to_a"), (plan / plan.sum(2, keepdim=True)) @ y)
    cols = plan.transpose(1, 2)
    torch.testing.assert_close(align(x, y, direction="to_b"), (cols / cols.sum(2, keepdim=True)) @ x)
    for old in ("to_x", "to_y"):  # the pre-AlignMixup names are gone: one vocabulary
        with pytest.raises(ValueError, match="direction must be 'to_a' .* or 'to_b'"):
            align(x, y, direction=old)


def test_align_without_detach_refuses_a_solver_without_gradients():
    x, y = (t.requires_grad_() for t in points(B=1, n=4, m=4, C=3, dtype=torch.float64))
    with pytest.raises(ValueError, match="'pot' cannot differentiate"):
        align(x, y, solver="pot", detach_plan=False)
    align(x, y, solver="pot").sum().backward()  # a detached plan is fine
    with torch.no_grad():  # nothing to differentiate: no error either
        align(x, y, solver="pot", detach_plan=False)


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -0.01], ids=["nan", "inf", "negative"],
)
def test_align_rejects_a_given_plan_that_is_not_a_coupling(bad):
    x, y = points(B=2, n=5, m=4)
    plan = torch.full((2, 5, 4), 1 / 20)
    plan[1, 2, 3] = bad
    with pytest.raises(ValueError, match="NaN, Inf or negative"):
        align(x, y, plan=plan)


def test_a_given_plan_is_checked_alike_by_align_and_align_mix_features():
    """The same check (mixkit.ot.check_plan) behind both public entry points that accept a plan: NaN and
    negative entries, and rows without mass (an all-zero plan carries nothing), are refused."""
    from mixkit.mix import align_mix_features

    x, y = points(B=2, n=4, m=4, C=3)
    fa, fb = (p.transpose(1, 2).reshape(2, 3, 2, 2) for p in (x, y))  # (B, C, H, W) with the same points
    good = torch.full((2, 4, 4), 1 / 16)
    torch.testing.assert_close(align_mix_features(fa, fb, 0.0, plan=good).flatten(2).transpose(1, 2),
                               align(x, y, plan=good))
    nan = good.clone()
    nan[0, 1, 1] = float("nan")
    empty_row = good.clone()
    empty_row[1, 2] = 0.0
    for bad, match in ((nan, "NaN, Inf or negative"), (-good, "NaN, Inf or negative"),
                       (torch.zeros_like(good), "row without mass"), (empty_row, "row without mass")):
        with pytest.raises(ValueError, match=match):
            align(x, y, plan=bad)
        with pytest.raises(ValueError, match=match):
            align_mix_features(fa, fb, 0.5, plan=bad)


# --------------------------------------------------------------------------- the periodic check of the CUDA path


def test_cuda_check_schedule_keeps_plans_and_bounds_host_syncs_on_cpu():
    """check_every=default_check_every('cuda', ...) runs the CUDA schedule on CPU tensors: the same plan
    (to the solver's tolerance), iteration counts rounded up to the next check, at most 10 syncs."""
    x, y = points(B=8, n=49, m=49, C=32, seed=3)
    cost = normalize_cost(squared_euclidean_cost(x.relu(), y.relu()))
    cpu_plan, cpu_info = sinkhorn_torch(cost, return_info=True)
    every = default_check_every("cuda", 1000)
    assert every == 100 and default_check_every("cpu", 1000) == 10
    with DispatchCounter() as counter:
        cuda_plan, cuda_info = sinkhorn_torch(cost, check_every=every, return_info=True)
    assert counter.syncs <= 10
    assert cuda_info.converged and marginal_error(cuda_plan).max() <= 1.01e-3
    assert (cuda_plan - cpu_plan).abs().max() * 49 < 5e-3
    # Both stop at the first check after convergence: the CUDA run's last stage is the CPU's rounded up to
    # 100 (the stages before it take 7 re-anchoring updates and 6 x 4 scaling iterations, 31 in all).
    cpu_last, cuda_last = cpu_info.n_iter - 31, cuda_info.n_iter - 31
    assert cpu_last % 10 == 0 and cuda_last == -(-cpu_last // 100) * 100


def _published_algorithm(cost: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One problem (n, m) solved by a re-statement of the solver (plain tensors, no in-place tricks):
    log-domain re-anchoring per stage, then scaling iterations, over-relaxed in the last stage, which
    stops at the first check (every 10 iterations) where the marginal error is below 1e-3."""
    n, m = cost.shape
    f, g = torch.zeros(n, dtype=cost.dtype), torch.zeros(m, dtype=cost.dtype)
    schedule = [0.05 * 64 * 0.5**k for k in range(6)] + [0.05]
    n_iter = 0
    for stage, eps in enumerate(schedule):
        f = eps * (np.log(1 / n) - torch.logsumexp((g[None, :] - cost) / eps, dim=1))
        g = eps * (np.log(1 / m) - torch.logsumexp((f[:, None] - cost) / eps, dim=0))
        n_iter += 1
        K = torch.exp((f[:, None] + g[None, :] - cost) / eps)
        u, v = torch.ones(n, dtype=cost.dtype), torch.ones(m, dtype=cost.dtype)
        last, steps = stage == len(schedule) - 1, 0
        while steps < (1000 - n_iter if last else 4):
            w = 1.5 if last else 1.0
            u = u * ((1 / n) / (K @ v) / u) ** w
            v = v * ((1 / m) / (K.T @ u) / v) ** w
            steps += 1
            if last and steps % 10 == 0:
                p = u[:, None] * K * v[None, :]
                if (p.sum(1) - 1 / n).abs().sum() + (p.sum(0) - 1 / m).abs().sum() < 1e-3:
                    break
        n_iter += steps
        f, g = f + eps * torch.log(u), g + eps * torch.log(v)
    return torch.exp((f[:, None] + g[None, :] - cost) / schedule[-1]), n_iter


def test_plans_are_unchanged_from_the_published_algorithm():
    """Each problem of a batch gets the plan of the re-stated algorithm run on it alone (every problem
    stops on its own); the reported iteration count is the batch's largest."""
    x, y = points(B=3, n=9, m=11, C=8, seed=4, dtype=torch.float64)
    cost = normalize_cost(squared_euclidean_cost(x, y))
    plan, info = sinkhorn_torch(cost, return_info=True)
    expected = [_published_algorithm(c) for c in cost]
    assert len({it for _, it in expected}) > 1  # the problems stop at different checks
    assert info.n_iter == max(it for _, it in expected)
    assert info.n_iter_per_problem.tolist() == [it for _, it in expected]
    torch.testing.assert_close(plan, torch.stack([p for p, _ in expected]), rtol=1e-9, atol=1e-12)
