"""The method contract, checked for every registered method (``list_mixups()``), present and future.

A new method registered with ``register_mixup`` is collected here without editing a list. Each test states
one rule of timm's Mixup contract as mixkit keeps it (mixkit/mix/base.py): shapes and soft targets (against
a re-statement of timm's ``mixup_target`` with the call's own draw), ``mixup_enabled``, odd batches, eval
mode, the grad-mode firing rule, copies and pickles, the checkpoint state, the optional parts' defaults,
and DDP with two processes.
"""

# The methods draw from NumPy's global generator, as timm's Mixup does, so the tests seed that one.
# ruff: noqa: NPY002

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from mixkit.mix import Draw, MixupBase, create_mixup, get_mixup_class, list_mixups

NUM_CLASSES = 5
SMOOTHING = 0.1
METHODS = list_mixups()


class ContractNet(nn.Module):
    """Three strided convolutions and a head, with timm-style feature_info and num_classes: every method's
    defaults resolve on it (manifold: input, stage1, stage2; AlignMixup: stage2, a 2x2 map at 16 px)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 6) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, stride=2), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(width, num_classes)
        self.feature_info = [dict(module="stem", num_chs=width, reduction=2),
                             dict(module="stage1", num_chs=width, reduction=4),
                             dict(module="stage2", num_chs=width, reduction=8)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(self.stem(x))).mean((2, 3)))


def _model(seed: int = 0) -> ContractNet:
    torch.manual_seed(seed)
    return ContractNet().train()


def _batch(batch_size: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, 16, 16, generator=g), torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)


def _create(name: str, model: nn.Module, **kwargs):
    return create_mixup(name, model=model, **{"num_classes": NUM_CLASSES, "label_smoothing": SMOOTHING, **kwargs})


def _expected_targets(y: torch.Tensor, draw: Draw, smoothing: float) -> torch.Tensor:
    """timm's mixup_target re-stated for one draw: lam_i * e(y_i) + (1 - lam_i) * e(y_partner(i)), smoothed;
    sum_j w_ij e(y_j) for a draw with label weights (several inputs per output)."""
    batch = len(y)
    if draw.weights is not None:
        assert draw.weights.shape == (batch, batch) and np.allclose(draw.weights.sum(1), 1.0)
        return torch.from_numpy(draw.weights).double() @ _expected_targets(y, Draw(), smoothing)
    lam = np.full(batch, draw.lam, dtype=np.float64) if isinstance(draw.lam, float) else draw.lam.astype(np.float64)
    partner = np.arange(batch)[::-1] if draw.partner is None else draw.partner
    off, on = smoothing / NUM_CLASSES, 1 - smoothing + smoothing / NUM_CLASSES
    onehot = torch.full((batch, NUM_CLASSES), off, dtype=torch.float64)
    onehot[torch.arange(batch), y] = on
    w = torch.from_numpy(lam).reshape(-1, 1)
    return w * onehot + (1 - w) * onehot[torch.from_numpy(partner.copy())]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_shapes_and_soft_targets_follow_the_draw(name: str, batch_size: int) -> None:
    model = _model()
    x, y = _batch(batch_size)
    with _create(name, model) as mix:
        assert isinstance(mix, MixupBase)
        for seed in range(6):  # several draws: both branches of the methods that have two
            np.random.seed(seed)
            x_in, target = mix(x.clone(), y)
            draw = mix.last_draw
            assert isinstance(draw, Draw) and x_in.shape == x.shape and x_in.dtype == x.dtype
            assert target.shape == (batch_size, NUM_CLASSES) and target.dtype == torch.float32
            torch.testing.assert_close(target.sum(1), torch.ones(batch_size))
            torch.testing.assert_close(target.double(), _expected_targets(y, draw, mix.label_smoothing),
                                       rtol=1e-6, atol=1e-6)
            assert draw.mixed == (draw.branch != "none")
            out = model(x_in)
            assert out.shape == target.shape
            SoftTargetCrossEntropy()(out, target).backward()


@pytest.mark.parametrize("name", METHODS)
def test_disabled_mixes_nothing_and_smooths_the_targets(name: str) -> None:
    model = _model()
    reference = copy.deepcopy(model)
    x, y = _batch()
    with _create(name, model) as mix:
        mix.mixup_enabled = False  # what a train loop does at --mixup-off-epoch
        np.random.seed(0)
        state = np.random.get_state()
        x_in, target = mix(x.clone(), y)
        assert not mix.last_draw.mixed
        torch.testing.assert_close(x_in, x)
        torch.testing.assert_close(target.double(), _expected_targets(y, Draw(), mix.label_smoothing))
        torch.testing.assert_close(model(x_in), reference(x_in))  # no hook fires on the training forward
        assert np.random.get_state()[2] == state[2]  # nothing is drawn when disabled (timm's rule)


@pytest.mark.parametrize("name", METHODS)
def test_odd_batch_middle_sample_keeps_its_target_under_the_flip_pairing(name: str) -> None:
    model = _model()
    x, y = _batch(3)
    with _create(name, model, label_smoothing=0.0) as mix:
        if mix.pairing != "flip":
            pytest.skip(f"{name} does not pair by flip (pairing {mix.pairing!r}): there is no middle sample")
        for seed in range(6):
            np.random.seed(seed)
            x_in, target = mix(x.clone(), y)
            model(x_in)
            torch.testing.assert_close(x_in[1], x[1])
            torch.testing.assert_close(target[1, y[1]], torch.tensor(1.0))


@pytest.mark.parametrize("name", METHODS)
def test_eval_and_no_grad_forwards_never_mix_and_leave_the_mix_for_training(name: str) -> None:
    """A forward in eval mode or without grad sees the returned input unmixed by hooks; the next training
    forward is the same as without those forwards (the mix was neither consumed nor changed)."""
    x, y = _batch()

    def run(extra_forwards: bool) -> torch.Tensor:
        model = _model()
        with _create(name, model) as mix:
            np.random.seed(3)
            mix(x.clone(), y)  # a first call, so an unconsumed mix would show in the warnings
            model(x)
            np.random.seed(4)
            x_in, _ = mix(x.clone(), y)
            reference = copy.deepcopy(model)  # the same weights and statistics; copies are never mixed
            if extra_forwards:
                with torch.no_grad():
                    torch.testing.assert_close(model(x_in), reference(x_in))
                model.eval()
                reference.eval()
                torch.testing.assert_close(model(x_in).detach(), reference(x_in).detach())
                model.train()
            return model(x_in).detach()

    torch.testing.assert_close(run(True), run(False), rtol=0, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_copies_and_pickles_follow_whether_the_method_holds_the_model(name: str) -> None:
    model = _model()
    x, y = _batch()
    with _create(name, model) as mix:
        if get_mixup_class(name).needs_model:
            for operation in (copy.deepcopy, copy.copy, pickle.dumps):
                with pytest.raises(TypeError, match="mixkit"):
                    operation(mix)
            return
        clone = pickle.loads(pickle.dumps(mix))
        for method in (mix, clone, copy.deepcopy(mix)):
            np.random.seed(0)
            x_in, target = method(x.clone(), y)
            np.random.seed(0)
            x_ref, target_ref = mix(x.clone(), y)
            assert torch.equal(x_in, x_ref) and torch.equal(target, target_ref)


@pytest.mark.parametrize("name", METHODS)
def test_checkpoint_state_resumes_the_same_mixes(name: str) -> None:
    """``state_dict()`` plus NumPy's state (which a checkpoint saves) continue the draws exactly."""
    x, y = _batch()

    def calls(mix, model, n: int) -> list[torch.Tensor]:
        outs = []
        for _ in range(n):
            x_in, target = mix(x.clone(), y)
            outs += [x_in, target, model(x_in).detach()]
        return outs

    model = _model()
    with _create(name, model) as mix:
        np.random.seed(7)
        calls(mix, model, 2)
        saved, rng = mix.state_dict(), np.random.get_state()
        weights = copy.deepcopy(model.state_dict())
        expected = calls(mix, model, 3)
    model = _model(seed=1)
    model.load_state_dict(weights)
    with _create(name, model) as mix:
        mix.mixup_enabled = False  # the restored state must override what the new object starts with
        mix.load_state_dict(saved)
        np.random.set_state(rng)
        for got, want in zip(calls(mix, model, 3), expected, strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("name", METHODS)
def test_optional_parts_default_and_with_block_detaches(name: str) -> None:
    model = _model()
    x, y = _batch()
    with _create(name, model) as mix:
        parts = mix.extra_modules()
        assert isinstance(parts, dict) and all(isinstance(p, nn.Module) for p in parts.values())
        model_params = {id(p) for p in model.parameters()}
        assert not any(id(p) in model_params for part in parts.values() for p in part.parameters())
        np.random.seed(0)
        mix(x.clone(), y)
        model(x)
        extra = mix.extra_loss()
        assert extra is None or (isinstance(extra, torch.Tensor) and extra.ndim == 0)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with pytest.raises(TypeError, match="floating-point"):  # a refused call arms nothing
        with _create(name, model) as mix:
            mix((x * 100).to(torch.uint8), y)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        report = {}
        for name in METHODS:
            model = DistributedDataParallel(_model())
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            with _create(name, model) as mix:
                np.random.seed(100 + rank)  # each rank mixes its own batch differently, as in timm
                fired = 0
                for step in range(3):
                    x, y = _batch(seed=10 * rank + step)
                    x_in, target = mix(x, y)
                    loss = SoftTargetCrossEntropy()(model(x_in), target)
                    fired += mix.last_draw.branch == "feature"
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                hooks = getattr(mix, "hooks", None)
                assert hooks is None or hooks.num_fired == fired  # every armed mix fired under DDP
            report[name] = float(sum(p.double().sum() for p in model.parameters()))
        # A layer name copied from the wrapped model ("module.stage1") is the unwrapped module's.
        with _create("manifold", DistributedDataParallel(_model()), layers=["module.stage1"]) as mix:
            report["layers"] = list(mix.layers)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_method_trains_under_ddp_with_two_processes(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert set(reports[0]) == {*METHODS, "layers"} and reports[0]["layers"] == ["stage1"]
    for name in METHODS:  # DDP kept the replicas identical although each rank mixed differently
        assert reports[0][name] == pytest.approx(reports[1][name], rel=1e-6), name
