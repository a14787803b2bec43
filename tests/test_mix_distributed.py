"""Feature-space mixing under DistributedDataParallel (2 CPU processes, gloo), Accelerate and torch.compile.

Images are 64 px so that resnet18's layer4 is a 2x2 map: at 32 px it is 1x1, which AlignMixup refuses.
"""

# timm's Mixup draws from NumPy's global generator, so the tests seed exactly that one.
# ruff: noqa: NPY002

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from timm.loss import SoftTargetCrossEntropy
from torch.nn.parallel import DistributedDataParallel

from mixkit import create_mixup

NUM_CLASSES = 5


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
        model = DistributedDataParallel(timm.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        report: dict[str, object] = {}
        # Names copied from the wrapped model ("module.layer4") resolve to the same module.
        for method, kwargs in [("alignmixup", dict(input_prob=0.0)), ("manifold", dict(layers=["module.layer3"]))]:
            with create_mixup(method, model=model, num_classes=NUM_CLASSES, **kwargs) as mix:
                np.random.seed(100 + rank)  # different mixes per rank, as with per-rank seeding in timm
                torch.manual_seed(rank)
                x, y = torch.randn(4, 3, 64, 64), torch.randint(0, NUM_CLASSES, (4,))
                for _ in range(2):
                    x_in, target = mix(x, y)
                    loss = SoftTargetCrossEntropy()(model(x_in), target)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                report[method] = dict(fired=mix.hooks.num_fired, layers=list(mix.layers), loss=float(loss))
        report["param_sum"] = float(sum(p.double().sum() for p in model.parameters()))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for report in reports:
        assert report["alignmixup"]["fired"] == 2 and report["alignmixup"]["layers"] == ["layer4"]
        assert report["manifold"]["fired"] == 2 and report["manifold"]["layers"] == ["layer3"]
    # DDP kept the replicas identical although each rank mixed differently.
    assert reports[0]["param_sum"] == pytest.approx(reports[1]["param_sum"], rel=1e-6)
    assert reports[0]["alignmixup"]["loss"] != reports[1]["alignmixup"]["loss"]


def test_accelerate_prepared_model(monkeypatch: pytest.MonkeyPatch) -> None:
    accelerate = pytest.importorskip("accelerate")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    accelerator = accelerate.Accelerator(cpu=True)
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, NUM_CLASSES, (4,))
    with torch.no_grad():
        plain = model(x)
    with create_mixup("alignmixup", model=model, num_classes=NUM_CLASSES, input_prob=0.0) as mix:
        np.random.seed(0)
        x_in, target = mix(x, y)
        out = model(x_in)
        assert mix.hooks.num_fired == 1 and not torch.allclose(out, plain, atol=1e-3)
        accelerator.backward(SoftTargetCrossEntropy()(out, target))
        optimizer.step()


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    # The hooks run outside the compiled graph (torch.compiler.disable), so the compiled model mixes
    # exactly like the eager one; 'aot_eager' checks the tracing without inductor's C++ build time.
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES).train()
    compiled = torch.compile(model, backend="aot_eager")
    with create_mixup("alignmixup", model=compiled, num_classes=NUM_CLASSES, input_prob=0.0) as mix:
        assert mix.hooks.model is model
        x, y = torch.randn(4, 3, 64, 64), torch.randint(0, NUM_CLASSES, (4,))
        for seed in range(3):  # new lam and direction each step: no recompilation needed, same results
            np.random.seed(seed)
            x_in, target = mix(x, y)
            out = compiled(x_in)
            SoftTargetCrossEntropy()(out, target).backward()
            np.random.seed(seed)
            x_in, _ = mix(x, y)
            torch.testing.assert_close(out.detach(), model(x_in).detach())  # eager, grad on: it mixes
        assert mix.hooks.num_fired == 6
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))  # not armed: plain
