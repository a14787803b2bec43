"""The saliency pass of the method contract (mixkit.mix.saliency): the input gradient on clean inputs,
checked against a gradient written out with autograd on an untouched copy, with BatchNorm's running
statistics, the parameters' gradients and the caller's grad mode left as they were; and, for every
registered method built on ``GradientSaliencyMixupBase`` (PuzzleMix, Co-Mixup), the authors' clean loss
and the pass's mode."""

# The methods draw from NumPy's global generator, as timm's Mixup does, so the tests seed that one.
# ruff: noqa: NPY002

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mixkit.mix import create_mixup, get_mixup_class, input_gradient, list_mixups
from mixkit.mix.saliency import GradientSaliencyMixupBase, frozen_norm_statistics

DETACHING_MODEL = "mixkit_test_detaching_net"
CLEAN_LOSS_METHODS = [n for n in list_mixups() if isinstance(get_mixup_class(n), type)
                      and issubclass(get_mixup_class(n), GradientSaliencyMixupBase)]


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


class DetachingNet(nn.Module):
    """A classifier whose forward detaches its input: the loss has no gradient with respect to the images."""

    def __init__(self, num_classes: int = 4, in_chans: int = 3, **kwargs: Any) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_chans, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.detach()).mean((2, 3))


def test_a_model_without_input_gradients_is_refused_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="gradient with respect to the input images.*Make the input path"):
        input_gradient(DetachingNet(3), *_batch())


@pytest.mark.parametrize("name", [n for n in list_mixups() if get_mixup_class(n).uses_model_gradient])
def test_mixkit_train_refuses_a_model_without_input_gradients_naming_the_fix(name: str, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    """Every method with a saliency pass, through mixkit-train's console entry: its first step stops with
    the saliency pass's error (exit code 2, no traceback)."""
    import timm
    from timm.models import register_model
    from train_fixtures import main_in_process, make_image_folder, tiny_args

    if not timm.is_model(DETACHING_MODEL):
        @register_model
        def mixkit_test_detaching_net(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            return DetachingNet(**kwargs)

    data = make_image_folder(tmp_path / "data", train_per_class=2, val_per_class=1)
    argv = tiny_args(data, tmp_path / "out", "--mixup", name, "--model", DETACHING_MODEL)
    assert main_in_process(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixkit-train: error: ") and "Make the input path differentiable" in err, err


def test_the_clean_loss_family_is_the_saliency_methods_of_their_authors() -> None:
    assert {"puzzlemix", "comixup"} <= set(CLEAN_LOSS_METHODS)


@pytest.mark.parametrize("name", CLEAN_LOSS_METHODS)
def test_the_clean_loss_is_clean_lam_times_the_clean_batchs_cross_entropy_through_the_model(name: str) -> None:
    """clean_lam > 0: ``extra_loss()`` is clean_lam x the cross-entropy of the model (training mode) on the
    clean batch, with its graph to the parameters, read once; clean_lam=0: none, and no summary column."""
    model, (x, y) = _net(), _batch()
    x = F.interpolate(x, size=16)  # every method's default grid fits 16 px
    reference = copy.deepcopy(model)
    with create_mixup(name, model=model, num_classes=3, clean_lam=2.0) as mix:
        assert mix.extra_loss_name == "clean_loss"
        np.random.seed(0)
        mix(x, y)
        loss = mix.extra_loss()
        assert mix.extra_loss() is None  # consumed once, as the engine reads it
    torch.testing.assert_close(loss, 2.0 * F.cross_entropy(reference(x), y))
    loss.backward()
    assert model[-1].weight.grad is not None and model[-1].weight.grad.abs().sum() > 0
    with create_mixup(name, model=_net(), num_classes=3, clean_lam=0) as mix:
        assert mix.extra_loss_name is None
        mix(x, y)
        assert mix.extra_loss() is None
    with create_mixup(name, model=_net(), num_classes=3, prob=0.0) as mix:  # an unmixed batch: no pass, no loss
        mix(x, y)
        assert mix.extra_loss() is None


@pytest.mark.parametrize("name", CLEAN_LOSS_METHODS)
def test_the_saliency_pass_runs_in_eval_mode_unless_the_clean_loss_trains_on_it(name: str) -> None:
    """The authors' rule (PuzzleMix's and Co-Mixup's main.py: ``if args.clean_lam == 0: model.eval()``);
    every module's mode is restored afterwards."""
    seen = []
    model = _net()
    model[1].register_forward_pre_hook(lambda module, args: seen.append(module.training))
    x, y = F.interpolate(_batch()[0], size=16), _batch()[1]
    for clean_lam, mode in ((0.0, False), (1.0, True)):
        seen.clear()
        with create_mixup(name, model=model, num_classes=3, clean_lam=clean_lam) as mix:
            np.random.seed(0)
            mix(x, y)
        assert seen == [mode] and model.training and model[1].training


@pytest.mark.parametrize("name", CLEAN_LOSS_METHODS)
@pytest.mark.parametrize("clean_lam", [-1.0, float("nan"), True, "1"])
def test_a_bad_clean_lam_is_refused_naming_the_range(name: str, clean_lam: Any) -> None:
    with pytest.raises(ValueError, match="clean_lam must be a finite number >= 0"):
        create_mixup(name, model=_net(), num_classes=3, clean_lam=clean_lam)
