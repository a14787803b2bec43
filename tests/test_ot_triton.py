"""The fused Triton solver: under the interpreter (no GPU), compiled for sm_90, and on CUDA when there is one.

The interpreter runs in a subprocess: TRITON_INTERPRET must be set before triton is imported, and
must not leak into the other tests.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from mixkit.ot import (
    get_solver,
    marginal_error,
    normalize_cost,
    sinkhorn_pot,
    sinkhorn_torch,
    sinkhorn_triton,
    squared_euclidean_cost,
    transport_plan,
)

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install triton)")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")

SHAPES = [(4, 16, 16), (3, 49, 49), (2, 10, 13), (1, 196, 196)]
# Tight enough for fp32 to match POT's converged plan to 1e-3 (fp32 stalls near 1e-5).
TIGHT = {"max_iter": 3000, "tol": 2e-5}

_INTERPRETED = textwrap.dedent("""
    import os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from mixkit.ot import sinkhorn_triton

    cases = torch.load(sys.argv[1])
    out = []
    for case in cases:
        plan, info = sinkhorn_triton(case["cost"], return_info=True, **case["kwargs"])
        out.append({"plan": plan, "iters": info.n_iter_per_problem, "n_iter": info.n_iter,
                    "err": info.marginal_error, "converged": info.converged})
    # The default solver, forced onto the kernel as on CUDA: first solve of a shape checked, then trusted.
    os.environ["MIXKIT_OT_DEFAULT_SOLVER"] = "triton"
    from mixkit.ot import transport_plan
    from mixkit.ot.default_solver import guard_state
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3, 20, 8, generator=g), torch.randn(3, 20, 8, generator=g)
    default_plan, default_info = transport_plan(a, b, return_info=True)
    short = sinkhorn_triton(cases[0]["cost"], max_iter=3, return_info=True, warn=False)[1]
    out.append({"plan": default_plan, "solver": default_info.solver, "guard": guard_state(),
                "short": (short.n_iter, short.n_iter_per_problem, short.converged)})
    torch.save(out, sys.argv[2])
""")


def random_cost(B: int, n: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(B, n, 8, generator=g), torch.randn(B, m, 8, generator=g)
    return normalize_cost(squared_euclidean_cost(x, y))


def easy_and_hard() -> torch.Tensor:
    """A zero cost (converged at the first check) batched with a random one (hundreds of iterations)."""
    return torch.cat([torch.zeros(1, 16, 16), random_cost(1, 16, 16, seed=7)])


def per_problem_torch(cost: torch.Tensor, **kwargs) -> torch.Tensor:
    # sinkhorn_torch stops a batch on its worst problem; solved one by one it stops each problem
    # where the fused kernel does, so the two must agree to rounding.
    return torch.cat([sinkhorn_torch(cost[i:i + 1], **kwargs) for i in range(cost.shape[0])])


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Run every case once through the interpreter; returns (cases, results)."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install triton)")
    cases = [{"cost": random_cost(*s, seed=sum(s)), "kwargs": {}} for s in SHAPES]
    cases += [{"cost": c["cost"], "kwargs": TIGHT} for c in cases]
    cases.append({"cost": easy_and_hard(), "kwargs": {}})
    tmp = tmp_path_factory.mktemp("triton")
    torch.save(cases, tmp / "cases.pt")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETED, str(tmp / "cases.pt"), str(tmp / "out.pt")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cases, torch.load(tmp / "out.pt")


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SHAPES)), ids=[f"{B}x{n}x{m}" for B, n, m in SHAPES])
def test_interpreted_kernel_matches_torch_solver_and_marginals(interpreted, index):
    cases, results = interpreted
    cost, res = cases[index]["cost"], results[index]
    n = cost.shape[1]
    assert res["plan"].dtype == torch.float32 and torch.isfinite(res["plan"]).all()
    assert (res["plan"] * n - per_problem_torch(cost) * n).abs().max() < 1e-3
    err = marginal_error(res["plan"])
    assert err.max() <= 1e-3 * 1.01  # the default tol
    torch.testing.assert_close(res["err"], err.max())
    assert res["n_iter"] == int(res["iters"].max()) <= 500
    assert res["converged"]


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SHAPES)), ids=[f"{B}x{n}x{m}" for B, n, m in SHAPES])
def test_interpreted_kernel_converges_to_pot(interpreted, index):
    cases, results = interpreted
    case, res = cases[len(SHAPES) + index], results[len(SHAPES) + index]
    cost, n = case["cost"], case["cost"].shape[1]
    pot = sinkhorn_pot(cost.double(), 0.05, 20000, 1e-8)
    assert (res["plan"].double() * n - pot * n).abs().max() < 1e-3
    # The kernel checks u * (K v); the plan re-formed from the potentials adds fp32 rounding on top.
    assert marginal_error(res["plan"]).max() <= 2 * TIGHT["tol"]


@needs_triton
@pytest.mark.slow
def test_interpreted_kernel_stops_each_problem_on_its_own(interpreted):
    cases, results = interpreted
    cost, res = cases[-1]["cost"], results[-2]
    iters = res["iters"].tolist()
    assert iters[0] < iters[1], iters  # the zero cost did not wait for the random one
    torch.testing.assert_close(res["plan"][0], torch.full((16, 16), 1 / 256))
    assert (res["plan"] * 16 - per_problem_torch(cost) * 16).abs().max() < 1e-3


@needs_triton
@pytest.mark.slow
def test_interpreted_default_solver_runs_the_checked_kernel_and_honours_max_iter(interpreted):
    cases, results = interpreted
    res = results[-1]
    assert res["solver"] == "triton" and res["guard"] == {(20, 20): None}  # checked once, passed
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3, 20, 8, generator=g), torch.randn(3, 20, 8, generator=g)
    assert (res["plan"] - transport_plan(a, b, solver="torch")).abs().max() * 20 < 1e-3
    n_iter, per_problem, converged = res["short"]  # max_iter=3: 3 of the 7 annealing stages, unconverged
    assert n_iter == 3 and (per_problem <= 3).all() and not converged


@needs_triton
def test_kernel_compiles_for_h100():
    """Ahead-of-time compile to sm_90 machine code: the real (non-interpreted) path, without a GPU."""
    import triton
    from triton.backends.compiler import GPUTarget

    from mixkit.ot.triton_solver import _build_kernel

    kernel, interp = _build_kernel()
    if interp:
        pytest.skip("TRITON_INTERPRET=1 is set in this process")
    signature = {
        "cost_ptr": "*fp32", "plan_ptr": "*fp32", "iters_ptr": "*i32", "conv_ptr": "*i32", "eps_ptr": "*fp32",
        "budget_ptr": "*i32",
        **dict.fromkeys(["n", "m", "stride_b", "stride_n", "stride_m", "n_stages"], "i32"),
        **dict.fromkeys(["tol", "omega", "tiny"], "fp32"),
        **dict.fromkeys(["check_every", "absorb_every"], "i32"),
        "BLOCK_N": "constexpr", "BLOCK_M": "constexpr",
    }
    src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs={"BLOCK_N": 64, "BLOCK_M": 64})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # triton's notice about its fp-fusion default
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
    assert compiled.asm["cubin"]


def test_falls_back_to_torch_with_a_reason():
    cost = random_cost(2, 9, 11, seed=0)
    if not HAS_TRITON:
        with pytest.raises(ImportError, match="pip install triton"):
            sinkhorn_triton(cost)
        return
    from mixkit.ot.triton_solver import _build_kernel, fallback_reason

    if _build_kernel()[1]:
        pytest.skip("TRITON_INTERPRET=1 is set in this process")
    with pytest.warns(UserWarning, match="CUDA tensor"):
        torch.testing.assert_close(sinkhorn_triton(cost), sinkhorn_torch(cost), atol=0, rtol=0)
    with pytest.warns(UserWarning, match="fp64"):
        sinkhorn_triton(cost.double())
    with pytest.warns(UserWarning, match="no backward"):
        assert sinkhorn_triton(cost.clone().requires_grad_()).requires_grad
    assert "registers" in fallback_reason(torch.zeros(1, 300, 300), interpreted=True)
    assert fallback_reason(torch.zeros(1, 196, 196), interpreted=True) is None


def test_missing_triton_raises_an_import_error_naming_the_fix():
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # as if not installed
        import torch
        from mixkit.ot import sinkhorn_triton
        try:
            sinkhorn_triton(torch.rand(2, 4, 4))
        except ImportError as err:
            print(err)
        else:
            raise SystemExit("no ImportError")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pip install triton" in proc.stdout and "solver='torch'" in proc.stdout


def test_registered_with_the_torch_solvers_defaults():
    triton_solver, torch_solver = get_solver("triton"), get_solver("torch")
    assert triton_solver.solve is sinkhorn_triton
    assert (triton_solver.eps, triton_solver.max_iter, triton_solver.tol, triton_solver.cost_scale) == (
        torch_solver.eps, torch_solver.max_iter, torch_solver.tol, torch_solver.cost_scale)


def test_bad_arguments_are_rejected_before_triton_is_needed():
    cost = random_cost(2, 4, 4, seed=0)
    with pytest.raises(ValueError, match="eps"):
        sinkhorn_triton(cost, eps=0.0)
    with pytest.raises(ValueError, match="omega"):
        sinkhorn_triton(cost, omega=2.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        sinkhorn_triton(torch.full((2, 3, 3), float("nan")))


@needs_triton
@cuda
def test_cuda_kernel_matches_torch_solver():
    cost = torch.cat([easy_and_hard(), random_cost(6, 49, 49, seed=1)[:, :16, :16]])
    plan, info = sinkhorn_triton(cost.cuda(), return_info=True)
    plan = plan.cpu()
    assert (plan * 16 - per_problem_torch(cost) * 16).abs().max() < 1e-3
    assert marginal_error(plan).max() <= 1e-3 * 1.01
    iters = info.n_iter_per_problem.cpu()
    assert iters[0] < iters[1]
    big = random_cost(4, 196, 196, seed=2)
    plan = sinkhorn_triton(big.cuda()).cpu()
    assert (plan * 196 - per_problem_torch(big) * 196).abs().max() < 1e-3
