"""The benchmarks' GPU-free proxy counts what it claims (benchmarks/common.py), and results are written safely.

Expected counts are worked out by hand from each toy step: one host read per ``.item()`` / ``bool()`` /
``float()``, one per op whose output shape depends on the values (``nonzero``, boolean masks), none for
integer indexing or views.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS_DIR) not in sys.path:
    sys.path.append(str(BENCHMARKS_DIR))  # last: never shadows an installed module

from common import (  # noqa: E402  (needs the path above)
    OpCounter,
    count_ops,
    emulated_cuda_pipeline,
    emulated_cuda_step,
    result_path,
    sync_reason,
    write_json,
)

aten = torch.ops.aten


def test_sync_counter_counts_each_host_read_of_a_toy_step():
    x = torch.arange(12.0).reshape(3, 4) - 5

    def step():
        total = x.sum().item()  # 1: _local_scalar_dense
        if bool((x > 0).any()):  # 1
            total += float(x.max())  # 1
        nz = torch.nonzero(x)  # 1: output shape depends on the values
        picked = x[x > 0]  # 1: a boolean mask becomes indices through nonzero
        rows = x[torch.tensor([0, 2])]  # 0: integer indices stay on the device
        reps = torch.repeat_interleave(torch.tensor([1, 2]), torch.tensor([2, 1]), output_size=3)  # 0: size given
        return total, nz, picked, rows, reps

    (total, nz, picked, rows, reps), counter = count_ops(step)
    assert total == pytest.approx(x.sum().item() + 6.0)
    assert counter.num_syncs == 5
    assert counter.syncs == {"_local_scalar_dense": 3, "nonzero": 1, "index": 1}
    assert sum(counter.sync_sites.values()) == 5
    assert all("test_bench_counters.py" in site for site in counter.sync_sites)


def test_op_counter_counts_dispatched_ops_views_and_added_launches():
    a, b = torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    with OpCounter() as counter:
        c = torch.bmm(a, b)  # 1
        c.add_(1.0)  # 1
        d = c.transpose(1, 2)  # 1 (a view: no launch)
        e = (d * 2).relu()  # 2
        with counter.paused():
            e.sum()  # not counted
        counter.add_launches(3)  # e.g. a fused kernel counted by construction
    assert counter.ops == {"aten.bmm.default": 1, "aten.add_.Tensor": 1, "aten.transpose.int": 1,
                           "aten.mul.Tensor": 1, "aten.relu.default": 1}
    assert (counter.num_ops, counter.views, counter.num_launches, counter.num_syncs) == (8, 1, 7, 0)
    summary = counter.summary()
    assert summary["ops"] == 8 and summary["launches"] == 7 and summary["extra_launches"] == 3
    torch.testing.assert_close(e, (torch.bmm(a, b) + 1).transpose(1, 2).mul(2).relu())


def test_device_to_host_copies_and_one_hot_are_classified_without_running():
    # Meta tensors stand in for device tensors: the classifier only reads devices, dtypes and arguments.
    dev = torch.empty(4, device="meta")
    host = torch.empty(4)
    assert sync_reason(aten._to_copy.default, (dev,), {"device": torch.device("cpu")}) == "device_to_host_copy"
    assert sync_reason(aten._to_copy.default, (host,), {"device": torch.device("meta")}) is None
    assert sync_reason(aten.copy_.default, (host, dev), {}) == "device_to_host_copy"
    assert sync_reason(aten.copy_.default, (dev, host), {}) is None  # host to device: no wait
    labels = torch.empty(4, dtype=torch.long, device="meta")
    assert sync_reason(aten.one_hot.default, (labels, -1), {}) == "one_hot"  # reads the max label
    assert sync_reason(aten.one_hot.default, (labels, 10), {}) is None
    assert sync_reason(aten.add.Tensor, (dev, dev), {}) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to copy from")
def test_cuda_to_host_copy_is_a_sync():
    t = torch.ones(3, device="cuda")
    with OpCounter() as counter:
        t.cpu()
        t.to("cuda")  # already there: no copy at all
    assert counter.syncs == {"device_to_host_copy": 1}


def _solve_counts(solver):
    from mixkit.ot import transport_plan

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 16, 32, generator=g), torch.randn(8, 16, 32, generator=g)
    transport_plan(x, y, solver=solver)  # warm-up: first-shape checks
    with OpCounter() as counter:
        plan = transport_plan(x, y, solver=solver)
    return plan, counter


def test_emulated_fused_kernel_is_one_launch_with_a_valid_plan():
    with emulated_cuda_pipeline(solver="default") as emu:
        plan, counter = _solve_counts(emu.solver)
    assert counter.extra_launches == 1  # the stubbed fused kernel
    torch.testing.assert_close(plan, torch.full_like(plan, 1 / (16 * 16)))  # exact marginals: the guard passes
    _, cpu_counter = _solve_counts("torch")  # outside the emulation: the torch solver's CPU path
    assert cpu_counter.extra_launches == 0
    assert cpu_counter.num_ops > 10 * counter.num_ops  # hundreds of iterations of small ops vs one launch


def test_emulated_torch_path_checks_convergence_less_often_than_the_cpu_path():
    from mixkit.ot.defaults import MAX_CUDA_CHECKS

    with emulated_cuda_pipeline(solver="torch") as emu:
        _, cuda_like = _solve_counts(emu.solver)
    _, cpu = _solve_counts("torch")
    assert cpu.num_syncs > cuda_like.num_syncs
    assert cuda_like.num_syncs <= MAX_CUDA_CHECKS + 2  # the checks, the end-of-budget test, the cost's finiteness


def test_emulated_step_takes_the_label_check_off_the_host():
    from mixkit.mix.labels import LabelRangeCheck

    labels = torch.tensor([0, 3, 9])
    with OpCounter() as cpu:
        LabelRangeCheck(10)(labels)
    assert cpu.num_syncs == 2  # the CPU path reads min and max at once
    with emulated_cuda_step() as emu, OpCounter() as cuda_like:
        LabelRangeCheck(10)(labels)
    assert cuda_like.num_syncs == 0 and cuda_like.num_ops > 0
    assert "label" in emu.note


def test_write_json_is_atomic_and_never_writes_invalid_json(tmp_path):
    path = result_path(tmp_path, "solvers", device="cuda:0", tag="h100")
    assert path == tmp_path / "solvers-cuda-h100.json"
    write_json(path, {"ms": 1.5, "nan": float("nan"), "dtype": torch.float32, "where": tmp_path,
                      "rows": [np.float32(2.5), torch.tensor(float("inf")), torch.tensor(3)]})
    assert json.loads(path.read_text()) == {"ms": 1.5, "nan": None, "dtype": "torch.float32", "where": str(tmp_path),
                                            "rows": [2.5, None, 3]}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text())["ms"] == 1.5  # the last good result survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_an_alignmixup_feature_step_keeps_its_sync_budget_on_the_cuda_path():
    """AlignMixup's hook passes its own plans to the mix: no per-step plan scan (a host sync each on CUDA).
    The whole feature-branch forward, run with mixkit's CUDA logic on CPU tensors, stays within the
    benchmark's budget of 2 syncs (the solver's one, and at most one more)."""
    import timm

    from mixkit import create_mixup

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).train()
    x, y = torch.randn(8, 3, 64, 64), torch.arange(8) % 10
    with emulated_cuda_step(solver="default") as emu:
        with create_mixup("alignmixup", model=model, num_classes=10, input_prob=0.0, solver=emu.solver) as mix:
            for seed in range(2):  # the first feature step runs the solver's one-time first-shape check
                np.random.seed(seed)  # noqa: NPY002 (timm's mixing draws from NumPy's global generator)
                inputs, _ = mix(x, y)
                with OpCounter() as counter:
                    model(inputs)
            assert mix.hooks.num_fired == 2
    assert counter.num_syncs <= 2, dict(counter.sync_sites)


def test_a_host_copy_in_an_emulated_step_is_a_sync_and_the_declared_host_work_is_not_counted():
    """On CPU tensors ``.cpu()`` dispatches nothing: the emulated CUDA step counts it as the device-to-host copy it
    is on CUDA; the functions declared as host work (Co-Mixup's graph cuts) are left out of the counts."""
    from mixkit.mix import comixup

    x = torch.randn(4, 4)
    with emulated_cuda_step() as emu:
        with OpCounter() as counter:
            host = x.abs().cpu()
            comixup.compatibility(host, 0.5)  # host work: neither launches nor syncs
        assert "Tensor.cpu()" in emu.note and "compatibility" in emu.note
    assert counter.syncs == {"device_to_host_copy": 1}
    assert counter.ops == {"aten.abs.default": 1}
    with OpCounter() as outside:  # outside the emulation the copy is a no-op again
        x.cpu()
    assert outside.num_syncs == 0


@pytest.mark.slow
def test_every_registered_method_keeps_its_sync_budget_in_the_proxy():
    """overhead.py's proxy runs every registered method (the saliency methods' pass included) on the default
    CUDA pipeline's logic; each stays within its stated budget (SYNC_BUDGETS; none where a method names none)."""
    import overhead

    from mixkit.mix import list_mixups

    methods = ["none", *list_mixups()]
    proxy = overhead.sync_proxy({**overhead.PRESETS["cnn"], "img_size": 16}, methods, steps=2)
    assert "error" not in proxy and set(proxy["methods"]) == set(methods)
    for method, branches in proxy["methods"].items():
        assert "error" not in branches, (method, branches)
        for branch, counts in branches.items():
            assert counts["within_budget"], (method, branch, counts["syncs"], counts["sync_sites"])
    assert {b["syncs"] for b in proxy["methods"]["comixup"].values()} == {2}  # its two copies for the graph cuts
    assert proxy["methods"]["saliencymix"]["input"]["syncs"] == 0  # the peak and the box stay on the device
