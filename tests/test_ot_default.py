"""The 'default' solver's choice and guard: the fused kernel where it applies, checked on the first solve of
each shape, the torch solver (with a warning naming the reason) when the kernel raises or fails its check.

The kernel itself is simulated here (monkeypatched launch), so these run without triton or a GPU; the real
kernel under the default solver runs in tests/test_ot_triton.py (Triton's interpreter) and on CUDA below.
"""

import warnings

import pytest
import torch
from dispatch_counter import DispatchCounter

import mixkit.ot.default_solver as default_solver
from mixkit.ot import get_solver, sinkhorn_torch, transport_plan
from mixkit.ot.default_solver import guard_state, reset_guard, resolve_solver

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")


@pytest.fixture
def fake_kernel(monkeypatch):
    """Route the default solver to a stand-in kernel on CPU tensors; returns the list of its calls."""
    reset_guard()
    monkeypatch.setenv(default_solver.ENV_DEFAULT_SOLVER, "triton")
    monkeypatch.setattr(default_solver, "_triton_importable", lambda: True)
    monkeypatch.setattr(default_solver, "_build_kernel", lambda: (None, True))
    calls = []

    def install(behaviour):
        def launch(cost, eps, max_iter, tol, **options):
            calls.append(tuple(cost.shape))
            return behaviour(cost, eps, max_iter, tol, **options)

        monkeypatch.setattr(default_solver, "launch_fused", launch)
        return calls

    yield install
    reset_guard()


def correct(cost, eps, max_iter, tol, **options):
    plan, info = sinkhorn_torch(cost, eps, max_iter, tol, return_info=True, warn=False)
    B = cost.shape[0]
    return plan, torch.full((B,), info.n_iter, dtype=torch.int32), torch.ones(B, dtype=torch.int32)


def points(B=3, n=10, m=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, 6, generator=g), torch.randn(B, m, 6, generator=g)


def test_resolves_to_the_fused_kernel_of_each_device(monkeypatch):
    import mixkit.ot.numba_solver as numba_solver

    monkeypatch.delenv(default_solver.ENV_DEFAULT_SOLVER, raising=False)
    monkeypatch.setattr(default_solver, "_triton_importable", lambda: True)
    monkeypatch.setattr(numba_solver, "numba_importable", lambda: True)
    assert resolve_solver("cuda") == "triton" and resolve_solver("cpu") == "numba"
    monkeypatch.setattr(default_solver, "_triton_importable", lambda: False)
    monkeypatch.setattr(numba_solver, "numba_importable", lambda: False)
    assert resolve_solver("cuda") == "torch" and resolve_solver("cpu") == "torch"
    monkeypatch.setenv(default_solver.ENV_DEFAULT_SOLVER, "numba")
    assert resolve_solver("cpu") == "torch"  # forced, but not importable
    monkeypatch.setenv(default_solver.ENV_DEFAULT_SOLVER, "cuda-please")
    with pytest.raises(ValueError, match="MIXKIT_OT_DEFAULT_SOLVER"):
        resolve_solver("cpu")


def test_default_is_the_numba_loop_on_cpu(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.delenv(default_solver.ENV_DEFAULT_SOLVER, raising=False)
    reset_guard()
    x, y = points()
    plan, info = transport_plan(x, y, return_info=True)
    assert info.solver == "numba" and info.converged
    torch.testing.assert_close(plan, transport_plan(x, y, solver="torch"), rtol=1e-4, atol=1e-7)
    assert get_solver("default").cost_scale == get_solver("torch").cost_scale == get_solver("numba").cost_scale


def test_a_numba_failure_falls_back_to_torch_for_the_process(monkeypatch):
    import mixkit.ot.numba_solver as numba_solver

    monkeypatch.delenv(default_solver.ENV_DEFAULT_SOLVER, raising=False)
    monkeypatch.setattr(numba_solver, "numba_importable", lambda: True)
    reset_guard()
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("LLVM ERROR: out of memory")

    monkeypatch.setattr(numba_solver, "launch_fused", broken)
    x, y = points()
    with pytest.warns(RuntimeWarning, match="numba loop raised RuntimeError: LLVM ERROR"):
        plan, info = transport_plan(x, y, return_info=True)
    assert info.solver == "torch" and resolve_solver("cpu") == "torch"
    torch.testing.assert_close(plan, transport_plan(x, y, solver="torch"), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transport_plan(x, y)  # straight to torch, no second warning
    assert len(calls) == 1
    reset_guard()
    assert resolve_solver("cpu") == "numba"


def test_a_good_kernel_is_checked_once_per_shape_then_trusted(fake_kernel):
    calls = fake_kernel(correct)
    x, y = points()
    plan, info = transport_plan(x, y, return_info=True)
    assert info.solver == "triton" and guard_state() == {(10, 12): None}
    torch.testing.assert_close(plan, transport_plan(x, y, solver="torch"))
    transport_plan(x[:, :7], y)  # a new shape is checked too
    assert guard_state() == {(10, 12): None, (7, 12): None} and len(calls) == 2


def test_a_kernel_that_raises_falls_back_with_the_reason(fake_kernel):
    def broken(cost, *args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    fake_kernel(broken)
    x, y = points()
    with pytest.warns(RuntimeWarning, match="raised RuntimeError: CUDA error: an illegal memory access"):
        plan, info = transport_plan(x, y, return_info=True)
    assert info.solver == "torch"
    torch.testing.assert_close(plan, transport_plan(x, y, solver="torch"), rtol=0, atol=0)
    assert "raised RuntimeError" in guard_state()[(10, 12)]


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda plan: plan.fill_(float("nan")), "NaN or Inf"),
        (lambda plan: plan.fill_(1.0 / 100), "marginal error"),  # 120 entries: the mass is 1.2
        (lambda plan: plan.mul_(1.2), "marginal error"),
    ],
    ids=["nan", "wrong-mass", "scaled"],
)
def test_a_kernel_that_fails_its_check_falls_back_and_stays_off_for_that_shape(fake_kernel, corrupt, reason):
    def bad(cost, eps, max_iter, tol, **options):
        plan, iters, conv = correct(cost, eps, max_iter, tol)
        return corrupt(plan), iters, conv

    calls = fake_kernel(bad)
    x, y = points()
    with pytest.warns(RuntimeWarning, match=f"fused Triton kernel .*{reason}.* 10x12 problem"):
        plan, info = transport_plan(x, y, return_info=True)
    assert info.solver == "torch" and info.converged
    torch.testing.assert_close(plan, transport_plan(x, y, solver="torch"))
    transport_plan(x, y)  # the shape now goes straight to torch: the kernel is not called again
    assert len(calls) == 1


def test_a_hard_problem_keeps_the_kernel_and_reports_non_convergence(fake_kernel):
    """Over tolerance because the budget is short, not because the kernel is wrong: no fallback."""
    calls = fake_kernel(lambda cost, eps, max_iter, tol, **o: (*correct(cost, eps, max_iter, tol)[:2],
                                                              torch.zeros(cost.shape[0], dtype=torch.int32)))
    x, y = points()
    with pytest.warns(RuntimeWarning, match="did not converge"):
        transport_plan(x, y, max_iter=20)
    assert guard_state() == {(10, 12): None}
    # Later solves are not checked (no sync): the kernel's own flags warn, read lazily at the next call.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transport_plan(x, y, max_iter=20)
    with pytest.warns(RuntimeWarning, match="did not converge .* earlier solve"):
        transport_plan(x, y, max_iter=20)
    assert len(calls) == 3


def test_gradients_and_fp64_take_the_torch_solver_silently(fake_kernel, recwarn):
    calls = fake_kernel(correct)
    x, y = points()
    _, info = transport_plan(x.double(), y.double(), return_info=True)
    assert info.solver == "torch" and not calls
    x.requires_grad_()
    _, info = transport_plan(x, y, return_info=True)
    assert info.solver == "torch" and not calls and guard_state() == {}


@cuda
def test_default_on_cuda_runs_the_checked_kernel():
    pytest.importorskip("triton", reason="triton is not installed")
    reset_guard()
    x, y = points(B=8, n=49, m=49)
    plan, info = transport_plan(x.cuda(), y.cuda(), return_info=True)
    assert info.solver == "triton" and guard_state() == {(49, 49): None}
    assert (plan.cpu() - transport_plan(x, y, solver="torch")).abs().max() * 49 < 1e-2


def test_a_default_solve_through_the_kernel_dispatches_few_ops_and_no_sync(monkeypatch):
    """The CUDA default path's logic on CPU tensors, the kernel launch stubbed (it is one launch, no aten op):
    a trusted shape costs at most 50 dispatched ops and no host read; the first solve of a shape one."""
    reset_guard()
    monkeypatch.setenv(default_solver.ENV_DEFAULT_SOLVER, "triton")
    monkeypatch.setattr(default_solver, "_triton_importable", lambda: True)
    launches = []

    class Kernel:  # stands in for the jitted kernel: kernel[grid](*args, **meta)
        def __getitem__(self, grid):
            def launch(cost, plan, iters, conv, *args, **meta):
                launches.append(grid)
                with torch.utils._python_dispatch._disable_current_modes():  # the GPU's work, not dispatched ops
                    plan.copy_(sinkhorn_torch(cost, warn=False))
                    iters.fill_(100)
                    conv.fill_(1)
            return launch

    import mixkit.ot.triton_solver as triton_solver

    monkeypatch.setattr(triton_solver, "_build_kernel", lambda: (Kernel(), True))
    monkeypatch.setattr(default_solver, "_build_kernel", lambda: (Kernel(), True))
    solve = get_solver("default")
    x, y = points(B=8, n=49, m=49)
    cost = transport_plan.__globals__["pairwise_cost"](x, y)
    with DispatchCounter() as first:
        solve.solve_unchecked(cost, 0.05, 1000, 1e-3)
    assert first.syncs == 1 and guard_state() == {(49, 49): None}
    with DispatchCounter() as steady:
        plan = solve.solve_unchecked(cost, 0.05, 1000, 1e-3)
    assert steady.syncs == 0 and steady.ops <= 50, steady.ops
    assert len(launches) == 2 and launches[-1] == (8,)
    torch.testing.assert_close(plan, sinkhorn_torch(cost))
    reset_guard()
