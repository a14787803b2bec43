"""Feature-space mixing under Accelerate and torch.compile (DDP with two processes, for every method: test_mix_contract.py).

Images are 64 px so that resnet18's layer4 is a 2x2 map: at 32 px it is 1x1, which AlignMixup refuses.
"""

# timm's Mixup draws from NumPy's global generator, so the tests seed exactly that one.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.loss import SoftTargetCrossEntropy

from mixkit import create_mixup

NUM_CLASSES = 5


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
