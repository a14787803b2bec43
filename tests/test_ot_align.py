"""Barycentric alignment: hand-computed projections, permutation recovery, gradients, dtypes."""

import pytest
import torch

from mixkit.ot import align, barycentric_projection, transport_plan


def test_barycentric_projection_hand_computed():
    plan = torch.tensor([[[0.25, 0.25], [0.0, 0.5]]])  # row 0 averages both partners, row 1 takes the second
    y = torch.tensor([[[2.0, 0.0], [4.0, 8.0]]])
    expected = torch.tensor([[[3.0, 4.0], [4.0, 8.0]]])
    torch.testing.assert_close(barycentric_projection(plan, y), expected)


def test_barycentric_projection_shape_mismatch():
    with pytest.raises(ValueError, match="does not match"):
        barycentric_projection(torch.rand(1, 3, 4), torch.rand(1, 5, 2))


@pytest.mark.parametrize("direction", ["to_a", "to_b"])
def test_align_undoes_a_permutation(direction):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 8, generator=g) * 3
    perm = torch.stack([torch.randperm(16, generator=g) for _ in range(2)])
    y = torch.gather(x, 1, perm.unsqueeze(-1).expand_as(x))
    out = align(x, y, direction=direction)
    # y carried onto x's positions is x itself; x carried onto y's positions is y itself, up to
    # the entropic blur, which is tiny next to the unaligned difference.
    target = x if direction == "to_a" else y
    torch.testing.assert_close(out, target, atol=0.1, rtol=0)
    assert (out - target).norm() < 0.01 * (y - x).norm()


def test_align_shapes_for_sets_of_different_sizes():
    x, y = torch.randn(3, 10, 4), torch.randn(3, 7, 4)
    assert align(x, y).shape == (3, 10, 4)
    assert align(x, y, direction="to_b").shape == (3, 7, 4)
    assert transport_plan(x, y).shape == (3, 10, 7)


def test_align_matches_manual_projection_of_each_solver():
    x, y = torch.randn(2, 9, 5, dtype=torch.float64), torch.randn(2, 9, 5, dtype=torch.float64)
    for solver in ("torch", "pot", "reference"):
        plan = transport_plan(x, y, solver=solver)
        rows = plan / plan.sum(2, keepdim=True)
        torch.testing.assert_close(align(x, y, solver=solver), rows @ y)
        cols = plan.transpose(1, 2) / plan.sum(1).unsqueeze(2)
        torch.testing.assert_close(align(x, y, solver=solver, direction="to_b"), cols @ x)


def test_gradients_reach_both_sets_through_a_detached_plan():
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    out = align(x, y)  # depends on y through the projection; on x only through the plan, which is detached
    out.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert x.grad is None
    mixed = 0.3 * x + 0.7 * align(x, y)
    x.grad, y.grad = None, None
    mixed.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    # With the plan fixed, the projection is linear in y: the gradient is the plan's column weights.
    plan = transport_plan(x.detach(), y.detach())
    rows = plan / plan.sum(2, keepdim=True)
    y.grad = None
    align(x, y).sum().backward()
    torch.testing.assert_close(y.grad, rows.sum(1).unsqueeze(-1).expand_as(y))


def test_gradcheck_through_the_solver_when_not_detached():
    x = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 5, 3, dtype=torch.float64, requires_grad=True)

    def fn(a, b):
        return align(a, b, eps=0.5, max_iter=300, tol=1e-12, detach_plan=False)

    assert torch.autograd.gradcheck(fn, (x, y), atol=1e-5, rtol=1e-3)


def test_align_keeps_input_dtype_under_autocast():
    x, y = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = align(x.bfloat16(), y.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), align(x, y), atol=0.1, rtol=0.05)


def test_align_bad_direction_and_inputs():
    x = torch.randn(1, 4, 3)
    with pytest.raises(ValueError, match="direction"):
        align(x, x, direction="both")
    with pytest.raises(ValueError, match="channel sizes differ"):
        align(x, torch.randn(1, 4, 2))
    with pytest.raises(ValueError, match="eps"):
        align(x, x, eps=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_align_on_cuda_matches_cpu():
    x, y = torch.randn(4, 49, 64), torch.randn(4, 49, 64)
    torch.testing.assert_close(align(x.cuda(), y.cuda()).cpu(), align(x, y), atol=1e-2, rtol=1e-2)


def test_align_with_a_given_plan_skips_the_solver():
    x, y = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    plan = torch.full((2, 5, 4), 1 / 20, dtype=torch.float64)  # the independent coupling: every row averages y
    torch.testing.assert_close(align(x, y, plan=plan), y.mean(1, keepdim=True).expand(2, 5, 3))
    torch.testing.assert_close(align(x, y, plan=plan, direction="to_b"), x.mean(1, keepdim=True).expand(2, 4, 3))
    with pytest.raises(ValueError, match="plan must have shape"):
        align(x, y, plan=plan.transpose(1, 2))


def test_scaled_plan_projection_is_n_times_the_plan():
    """projection='scaled_plan' (the AlignMixup authors'): the plan times n, not row-normalised."""
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    plan = transport_plan(a, b, solver="torch")
    torch.testing.assert_close(align(a, b, plan=plan, projection="scaled_plan"), 5 * plan @ b)
    torch.testing.assert_close(align(a, b, plan=plan, direction="to_b", projection="scaled_plan"),
                               5 * plan.transpose(1, 2) @ a)
    torch.testing.assert_close(align(a, b, plan=plan), (plan / plan.sum(2, keepdim=True)) @ b)
    with pytest.raises(ValueError, match="projection must be one of"):
        align(a, b, plan=plan, projection="plan")
