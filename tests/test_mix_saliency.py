"""The saliency pass of the method contract (mixkit.mix.saliency): the input gradient on clean inputs,
checked against a gradient written out with autograd on an untouched copy, with BatchNorm's running
statistics, the parameters' gradients and the caller's grad mode left as they were."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mixkit.mix import input_gradient
from mixkit.mix.saliency import frozen_norm_statistics


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).train()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 1])


def test_input_gradient_matches_autograd_and_touches_nothing_else() -> None:
    model, (x, y) = _net(), _batch()
    reference = copy.deepcopy(model)
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(reference(xr), y).backward()
    bn_before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # the caller's mode does not matter: the pass enables grad for itself
        grad, logits = input_gradient(model, x, y)
    torch.testing.assert_close(grad, xr.grad)
    torch.testing.assert_close(logits, reference(x).detach())
    assert not grad.requires_grad and not logits.requires_grad
    for k, v in model.state_dict().items():  # running statistics and batch counter restored
        assert torch.equal(v, bn_before[k]), k
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient accumulated
    assert model.training


def test_soft_targets_and_a_custom_loss() -> None:
    model, (x, y) = _net(), _batch()
    soft = F.one_hot(y, 3).float() * 0.9 + 0.1 / 3
    grad, _ = input_gradient(model, x, soft)
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(copy.deepcopy(model)(xr), soft).backward()
    torch.testing.assert_close(grad, xr.grad)
    summed, _ = input_gradient(model, x, y, loss_fn=lambda out, t: F.cross_entropy(out, t, reduction="sum"))
    torch.testing.assert_close(summed, input_gradient(model, x, y)[0] * len(y))


def test_wrappers_are_looked_through_and_autocast_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DDP-wrapped model gives the unwrapped module's gradient without DDP's reducer seeing a backward."""
    import torch.distributed as dist

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29531")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model, (x, y) = _net(), _batch()
        ddp = DistributedDataParallel(model)
        grad, _ = input_gradient(ddp, x, y)
        torch.testing.assert_close(grad, input_gradient(model, x, y)[0])
        loss = F.cross_entropy(ddp(x), y)  # DDP's own step still works after the pass
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        dist.destroy_process_group()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grad_bf16, logits = input_gradient(model, x, y)
    assert logits.dtype == torch.float32 and grad_bf16.dtype == x.dtype
    torch.testing.assert_close(grad_bf16, grad, rtol=0.1, atol=0.02)


def test_frozen_norm_statistics_restores_on_error() -> None:
    model, (x, _) = _net(), _batch()
    before = model[1].running_mean.clone()
    with pytest.raises(RuntimeError, match="boom"), frozen_norm_statistics(model):
        model(x)
        assert model[1].momentum == 0.0 and int(model[1].num_batches_tracked) == 1  # the pass's own update
        raise RuntimeError("boom")
    assert torch.equal(model[1].running_mean, before) and int(model[1].num_batches_tracked) == 0
    assert model[1].momentum == 0.1


def test_a_graph_kept_through_batch_norm_survives_the_frozen_statistics() -> None:
    """keep_graph: the logits' graph saved BatchNorm's running buffers; restoring them in place would break
    its backward, so the pass leaves them untouched (momentum 0) and the clean loss still backpropagates."""
    model, (x, y) = _net(), _batch()
    before = model[1].running_var.clone()
    _, logits = input_gradient(model, x, y, keep_graph=True)
    F.cross_entropy(logits, y).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert torch.equal(model[1].running_var, before) and int(model[1].num_batches_tracked) == 0
