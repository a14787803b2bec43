"""Feature-space methods ('manifold', 'alignmixup') on stock timm models and plain nn.Modules, on CPU.

References are computed by hand: the plain forward's features at the layer (captured with a hook), mixed
with the formulas (and mixkit.ot.align for the transport), then run through the rest of the network.
Models come fresh per test from conftest.py; every mixing function is used as a context manager.
Mixed forwards run with grad enabled (forwards under no_grad never mix: tests/test_mix_rules.py).
"""

# timm's Mixup draws from NumPy's global generator, so the tests seed exactly that one.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from mixkit.mix import (
    AlignMixup,
    ManifoldMixup,
    align_mix_features,
    create_mixup,
    flip_pair_plans,
    get_mixup_class,
    list_mixups,
    manifold_mix_features,
)
from mixkit.ot import align, transport_plan

NUM_CLASSES = 5
# AlignMixup solves half of the flip-pair plans and transposes them; a tight solver tolerance makes that
# agree with the hand reference (which solves every pair with mixkit.ot.align) to float precision.
TIGHT = dict(tol=1e-7, max_iter=5000)


def _lam(mix: ManifoldMixup | AlignMixup, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(mix.last_draw.lam).to(like.dtype)


def _hand_align(f: torch.Tensor, lam: torch.Tensor, direction: str) -> torch.Tensor:
    """AlignMixup of a (B, C, H, W) map with its flip partner, written out from the paper's formulas."""
    a = f.flatten(2).transpose(1, 2)
    b = a.flip(0)
    w = lam.reshape(-1, 1, 1)
    if direction == "to_a":  # b carried onto a's positions: row-normalised plan times b
        plan = transport_plan(a, b, **TIGHT)
        mixed = w * a + (1 - w) * (plan / plan.sum(2, keepdim=True)) @ b
    else:  # a carried onto b's positions: column-normalised plan, transposed, times a
        plan = transport_plan(a, b, **TIGHT).transpose(1, 2)
        mixed = w * (plan / plan.sum(2, keepdim=True)) @ a + (1 - w) * b
    return mixed.transpose(1, 2).reshape(f.shape)


@pytest.mark.parametrize("direction", ["to_a", "to_b"])
def test_alignmixup_resnet_matches_hand_mix_and_fires_once(resnet, make_batch, capture, direction) -> None:
    x, y = make_batch()
    with torch.no_grad(), capture(resnet.layer4) as feats:
        plain = resnet(x)
    with create_mixup(
        "alignmixup", model=resnet, num_classes=NUM_CLASSES, input_prob=0.0, direction=direction, **TIGHT
    ) as mix:
        np.random.seed(1)
        x_in, target = mix(x, y)
        assert x_in is x and mix.last_draw.layer == "layer4" and mix.last_draw.direction == direction
        mixed = resnet(x_in).detach()
        assert mix.hooks.num_fired == 1 and mix.hooks.armed is None
        with torch.no_grad():
            expected = resnet.forward_head(_hand_align(feats[0], _lam(mix, x), direction))
            torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-4)
            assert not torch.allclose(mixed, plain, atol=1e-3)
        torch.testing.assert_close(resnet(x).detach(), plain)  # the next forward is plain again
        assert mix.hooks.num_fired == 1
        torch.testing.assert_close(target.sum(1), torch.ones(len(y)))
        lam = float(mix.last_draw.lam[0])
        smooth = 0.1 / NUM_CLASSES
        onehot = torch.nn.functional.one_hot(y, NUM_CLASSES).float() * (1 - 0.1) + smooth
        torch.testing.assert_close(target, lam * onehot + (1 - lam) * onehot.flip(0))


def test_manifold_resnet_matches_hand_mix(resnet, make_batch, capture) -> None:
    x, y = make_batch()
    with create_mixup("manifold", model=resnet, layers=["layer2"], num_classes=NUM_CLASSES, mixup_alpha=1.0) as mix:
        with torch.no_grad(), capture(resnet.layer2) as feats:
            plain = resnet(x)
        np.random.seed(0)
        mix(x, y)
        mixed = resnet(x).detach()
        with torch.no_grad():
            lam = _lam(mix, x)
            hand = manifold_mix_features(feats[0], feats[0].flip(0), lam)
            torch.testing.assert_close(hand, lam[0] * feats[0] + (1 - lam[0]) * feats[0].flip(0))
            expected = resnet.forward_head(resnet.layer4(resnet.layer3(hand)))
        torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(mixed, plain, atol=1e-3)


def test_manifold_default_layers_and_input_branch(resnet, make_batch) -> None:
    with create_mixup("manifold", model=resnet, num_classes=NUM_CLASSES) as mix:
        assert mix.layers == ("input", "layer1", "layer2")  # the paper's k in {0, 1, 2}
        x, y = make_batch()
        chosen = set()
        for seed in range(12):
            np.random.seed(seed)
            x_in, _ = mix(x, y)
            chosen.add(mix.last_draw.layer)
            if mix.last_draw.layer == "input":
                lam = _lam(mix, x).reshape(-1, 1, 1, 1)
                torch.testing.assert_close(x_in, lam * x + (1 - lam) * x.flip(0))
                assert mix.hooks.armed is None
            else:
                assert x_in is x and mix.hooks.armed == mix.last_draw.layer
                mix.hooks.disarm()
        assert chosen == {"input", "layer1", "layer2"}


def test_alignmixup_input_branch_and_defaults(convnext, make_batch) -> None:
    with create_mixup("alignmixup", model=convnext, num_classes=NUM_CLASSES) as mix:
        assert mix.layers == ("stages.3",) and mix.input_prob == 0.5 and mix.mixup_alpha == 2.0
        x, y = make_batch()
        branches, directions = [], set()
        for seed in range(40):
            np.random.seed(seed)
            x_in, _ = mix(x, y)
            branches.append(mix.last_draw.layer)
            if mix.last_draw.layer == "input":
                lam = _lam(mix, x).reshape(-1, 1, 1, 1)
                torch.testing.assert_close(x_in, lam * x + (1 - lam) * x.flip(0))
            else:
                directions.add(mix.last_draw.direction)
                mix.hooks.disarm()
        assert 8 <= branches.count("input") <= 32 and directions == {"to_a", "to_b"}


def test_eval_and_disabled_never_mix(resnet, make_batch) -> None:
    x, y = make_batch()
    with create_mixup("alignmixup", model=resnet, num_classes=NUM_CLASSES, input_prob=0.0) as mix:
        plain_train = resnet(x).detach()
        resnet.eval()
        plain_eval = resnet(x).detach()
        np.random.seed(0)
        mix(x, y)
        torch.testing.assert_close(resnet(x).detach(), plain_eval)  # eval: untouched, mix stays armed
        assert mix.hooks.armed == "layer4" and mix.hooks.num_fired == 0
        resnet.train()
        assert not torch.allclose(resnet(x).detach(), plain_train, atol=1e-3)  # consumes the armed mix
        assert mix.hooks.num_fired == 1
        mix.mixup_enabled = False
        _, target = mix(x, y)
        assert mix.hooks.armed is None and not mix.last_draw.mixed
        torch.testing.assert_close(resnet(x).detach(), plain_train)
        onehot = torch.nn.functional.one_hot(y, NUM_CLASSES).float() * 0.9 + 0.1 / NUM_CLASSES
        torch.testing.assert_close(target, onehot)


@pytest.mark.parametrize(("method", "layer"), [("alignmixup", "stages.3"), ("manifold", "stages.1")])
def test_gradients_reach_both_samples(convnext, make_batch, method: str, layer: str) -> None:
    # ConvNeXt normalises per sample (LayerNorm), so cross-sample gradients can only come from the mix.
    x, y = make_batch()
    x.requires_grad_(True)
    kwargs = dict(input_prob=0.0) if method == "alignmixup" else {}
    with create_mixup(method, model=convnext, layers=layer, num_classes=NUM_CLASSES, **kwargs) as mix:
        np.random.seed(0)
        x_in, target = mix(x, y)
        out = convnext(x_in)
        SoftTargetCrossEntropy()(out[:1], target[:1]).backward()
    per_sample = x.grad.abs().flatten(1).sum(1)
    assert per_sample[0] > 0 and per_sample[-1] > 0  # the sample and its flip partner
    assert per_sample[1] == 0 and per_sample[2] == 0  # nobody else
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in convnext.parameters())


@pytest.mark.parametrize("method", ["alignmixup", "manifold"])
def test_deterministic_under_seed(convnext, make_batch, method: str) -> None:
    x, y = make_batch()

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        with create_mixup(method, model=convnext, layers=["stages.2", "stages.3"], num_classes=NUM_CLASSES) as mix:
            np.random.seed(seed)
            torch.manual_seed(seed)
            outs, targets = [], []
            for _ in range(4):
                x_in, t = mix(x, y)
                outs.append(convnext(x_in).detach())
                targets.append(t)
            return torch.cat(outs), torch.cat(targets)

    out1, t1 = run(3)
    out2, t2 = run(3)
    assert torch.equal(out1, out2) and torch.equal(t1, t2)
    out3, t3 = run(4)
    assert not torch.equal(t1, t3)


def test_vit_prefix_token_is_interpolated_and_patches_aligned(vit, make_batch, capture) -> None:
    x, y = make_batch(size=32)
    assert vit.num_prefix_tokens == 1
    with create_mixup(
        "alignmixup", model=vit, num_classes=NUM_CLASSES, input_prob=0.0, direction="to_a", **TIGHT
    ) as mix:
        assert mix.layers == ("blocks.1",) and mix.num_prefix_tokens == 1
        with torch.no_grad(), capture(vit.blocks[1]) as plain:
            vit(x)
        np.random.seed(0)
        mix(x, y)
        with capture(vit.blocks[1]) as mixed:  # registered after mixkit's hook: sees the mixed output
            out = vit(x).detach()
    f, m, lam = plain[0], mixed[0], _lam(mix, x).reshape(-1, 1)
    torch.testing.assert_close(m[:, 0], lam * f[:, 0] + (1 - lam) * f.flip(0)[:, 0])
    patches = f[:, 1:]
    w = lam.reshape(-1, 1, 1)
    torch.testing.assert_close(
        m[:, 1:], w * patches + (1 - w) * align(patches, patches.flip(0), **TIGHT), rtol=1e-3, atol=2e-4
    )
    with torch.no_grad():
        torch.testing.assert_close(out, vit.forward_head(vit.norm(m)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["alignmixup", "manifold"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_odd_batches_keep_the_middle_sample(convnext, make_batch, capture, method: str, batch_size: int) -> None:
    x, y = make_batch(batch_size)
    kwargs = dict(input_prob=0.0) if method == "alignmixup" else {}
    with create_mixup(
        method, model=convnext, layers="stages.3", num_classes=NUM_CLASSES, label_smoothing=0.0, **kwargs
    ) as mix:
        with torch.no_grad(), capture(convnext.stages[3]) as plain:
            convnext(x)
        np.random.seed(0)
        _, target = mix(x, y)
        with capture(convnext.stages[3]) as mixed:
            convnext(x)
        mid = batch_size // 2
        torch.testing.assert_close(mixed[0][mid], plain[0][mid])
        assert target[mid, y[mid]] == 1.0
        if batch_size == 1:
            assert not mix.last_draw.mixed and mix.hooks.num_fired == 0  # nothing to pair with
        else:
            assert mix.hooks.num_fired == 1 and not torch.allclose(mixed[0][0], plain[0][0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_channels_last_and_autocast(resnet, make_batch, capture, dtype: torch.dtype) -> None:
    x, y = make_batch()
    model = resnet.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
    with create_mixup(
        "alignmixup", model=model, num_classes=NUM_CLASSES, input_prob=0.0, direction="to_b", **TIGHT
    ) as mix, torch.autocast("cpu", dtype=dtype):
        with torch.no_grad(), capture(model.layer4) as plain:
            model(x)
        np.random.seed(0)
        mix(x, y)
        with capture(model.layer4) as mixed:
            out = model(x).detach()
    f, m = plain[0], mixed[0]
    assert f.dtype == m.dtype == dtype
    assert m.is_contiguous(memory_format=torch.channels_last) == f.is_contiguous(memory_format=torch.channels_last)
    expected = _hand_align(f.float(), _lam(mix, x), "to_b")
    torch.testing.assert_close(m.float(), expected, rtol=0.05, atol=0.05)
    assert torch.isfinite(out).all()


def test_any_module_by_name(make_batch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, NUM_CLASSES),
    )
    x, y = make_batch(size=4)  # 16 positions: the tight solve stays quick
    with pytest.raises(ValueError, match="no timm feature_info"):
        create_mixup("alignmixup", model=model, num_classes=NUM_CLASSES)
    with create_mixup(
        "alignmixup", model=model, layers="2", num_classes=NUM_CLASSES, input_prob=0.0, direction="to_a", **TIGHT
    ) as mix:
        with torch.no_grad():
            f = model[:3](x)
        np.random.seed(0)
        mix(x, y)
        out = model(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(out, model[3:](_hand_align(f, _lam(mix, x), "to_a")), rtol=1e-4, atol=1e-4)


class _Split(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


# (method, create_mixup kwargs, error type, message pattern): refused at construction.
CONSTRUCTION_ERRORS = [
    ("alignmixup", dict(layers="layer5"), ValueError, r"'layer5' does not exist.*feature_info.*layer4"),
    ("manifold", dict(layers=[7]), ValueError, "out of range"),
    ("alignmixup", dict(layers=["input", "layer4"]), ValueError, "input_prob"),
    ("alignmixup", dict(cutmix_alpha=1.0), ValueError, "does not do CutMix"),
    ("alignmixup", dict(mixup_alpha=0.0), ValueError, "mixup_alpha must be > 0"),
    ("alignmixup", dict(direction="sideways"), ValueError, "direction"),
    ("alignmixup", dict(projection="plan"), ValueError, "projection"),
    ("alignmixup", dict(solver="sinkhorn"), ValueError, "unknown OT solver"),
    ("manifold", dict(pairing="shuffle"), ValueError, "pairing"),
    ("manifold", dict(pairing="random", mode="pair"), ValueError, "mode 'pair'"),
    ("manifold", dict(num_classes=1000), ValueError, r"num_classes=1000.*5 outputs.*num_classes=5"),
    ("mixup", dict(num_classes=1000), ValueError, r"num_classes=1000.*5 outputs"),
    ("alignmixup", dict(layer="layer4"), ValueError, r"does not take layer; it takes: .*layers.*mixup_alpha"),
]


@pytest.mark.parametrize(("method", "kwargs", "error", "match"), CONSTRUCTION_ERRORS)
def test_construction_errors_leave_the_model_untouched(resnet, method, kwargs, error, match) -> None:
    kwargs = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(error, match=match):
        create_mixup(method, model=resnet, **kwargs)
    hooks = [m._forward_hooks for m in resnet.modules()] + [m._forward_pre_hooks for m in resnet.modules()]
    assert not any(hooks)  # a refused construction attaches nothing


def test_solver_settings_are_checked_without_solving(resnet, monkeypatch: pytest.MonkeyPatch) -> None:
    """AlignMixup checks its solver options at construction without running a solve (a probe solve cost
    about 2 s of start-up), and still refuses bad ones there."""
    import importlib

    ot_align = importlib.import_module("mixkit.ot.align")  # the module (the package's `align` is the function)

    def no_solve(*args, **kwargs):
        raise AssertionError("AlignMixup.__init__ ran a transport solve")

    monkeypatch.setattr(ot_align, "_transport_plan", no_solve)
    with create_mixup("alignmixup", model=resnet, num_classes=NUM_CLASSES, solver="numba", eps=0.1, tol=1e-4):
        pass
    for bad, match in ((dict(eps=-1.0), "eps must be"), (dict(max_iter=0), "max_iter"), (dict(tol="x"), "tol"),
                       (dict(solver="sinkhorn"), "unknown OT solver")):
        with pytest.raises((ValueError, TypeError), match=match):
            create_mixup("alignmixup", model=resnet, num_classes=NUM_CLASSES, **bad)


def test_model_is_required_and_data_parallel_refused(resnet) -> None:
    with pytest.raises(ValueError, match="needs the model"):
        create_mixup("manifold", num_classes=NUM_CLASSES)
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        create_mixup("manifold", model=nn.DataParallel(resnet), layers="layer1", num_classes=NUM_CLASSES)


def test_bad_layer_outputs_fail_at_the_forward(resnet, make_batch) -> None:
    x, y = make_batch()
    # A layer after pooling is no feature map: a clear error at the forward that would mix it.
    with create_mixup("alignmixup", model=resnet, layers="global_pool", input_prob=0.0, num_classes=NUM_CLASSES) as mix:
        np.random.seed(0)
        mix(x, y)
        with pytest.raises(TypeError, match=r"'global_pool'.*feature map"):
            resnet(x)
    tuple_model = nn.Sequential(nn.Identity())
    tuple_model.add_module("split", _Split())
    with create_mixup("manifold", model=tuple_model, layers="split", num_classes=NUM_CLASSES) as mix:
        np.random.seed(0)
        mix(x, y)
        with pytest.raises(TypeError, match="returns tuple, not a tensor"):
            tuple_model(x)


def test_timm_resnet_checkpointing_bypass_is_an_error(resnet, make_batch) -> None:
    x, y = make_batch()
    resnet.set_grad_checkpointing(True)
    with create_mixup("alignmixup", model=resnet, num_classes=NUM_CLASSES, input_prob=0.0) as mix:
        np.random.seed(0)
        mix(x, y)
        with pytest.raises(RuntimeError, match=r"checkpointing.*set_grad_checkpointing\(False\).*'layer4.1'"):
            resnet(x)
        assert mix.hooks.armed is None


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("method", ["alignmixup", "manifold"])
def test_checkpointed_block_replays_the_same_mix(vit, make_batch, method: str, reentrant: bool) -> None:
    from timm.layers import set_reentrant_ckpt, use_reentrant_ckpt

    x, y = make_batch(size=32)
    kwargs = dict(input_prob=0.0) if method == "alignmixup" else {}
    previous = use_reentrant_ckpt()

    def grads(mix, checkpointing: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        vit.zero_grad(set_to_none=True)
        vit.set_grad_checkpointing(checkpointing)
        np.random.seed(0)
        x_in, target = mix(x, y)
        loss = SoftTargetCrossEntropy()(vit(x_in), target)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in vit.parameters()]

    try:
        set_reentrant_ckpt(reentrant)
        with create_mixup(method, model=vit, layers="blocks.0", num_classes=NUM_CLASSES, **kwargs) as mix:
            loss_ref, grads_ref = grads(mix, False)
            loss_ckpt, grads_ckpt = grads(mix, True)
            assert mix.hooks.num_fired == 2  # once per armed call; replays during backward do not count
    finally:
        set_reentrant_ckpt(previous)
    torch.testing.assert_close(loss_ckpt, loss_ref)
    for g_ckpt, g_ref in zip(grads_ckpt, grads_ref, strict=True):
        torch.testing.assert_close(g_ckpt, g_ref, rtol=1e-4, atol=1e-5)


def test_functional_core_shapes_and_errors() -> None:
    torch.manual_seed(0)
    a = torch.randn(4, 6, 3, 5)
    lam = torch.tensor([0.2, 0.5, 0.5, 0.2])
    out = align_mix_features(a, a.flip(0), lam)
    assert out.shape == a.shape and out.dtype == a.dtype
    # NHWC layout is the same computation as NCHW on the permuted tensor.
    nhwc = align_mix_features(a.permute(0, 2, 3, 1), a.flip(0).permute(0, 2, 3, 1), lam, layout="nhwc")
    torch.testing.assert_close(nhwc.permute(0, 3, 1, 2), out)
    # lam = 1 keeps a with 'to_a'; lam = 0 keeps b with 'to_b'.
    torch.testing.assert_close(align_mix_features(a, a.flip(0), 1.0), a)
    torch.testing.assert_close(align_mix_features(a, a.flip(0), 0.0, direction="to_b"), a.flip(0))


FUNCTIONAL_ERRORS = [
    (lambda a: align_mix_features(a, a[:, :3], 0.5), "same shape"),
    (lambda a: align_mix_features(a[0], a[1], 0.5), "layout 'nchw' expects 4-d"),
    (lambda a: align_mix_features(a, a, 0.5, direction="up"), "direction"),
    (lambda a: align_mix_features(a, a, 0.5, projection="up"), "projection"),
    (lambda a: align_mix_features(a[:, 0], a[:, 1], 0.5, layout="nlc", num_prefix_tokens=3), "num_prefix_tokens"),
    (lambda a: align_mix_features(a, a, 0.5, plan=torch.ones(4, 15, 14)), r"plan must have shape"),
    (lambda a: manifold_mix_features(a, a[:, :3], 0.5), "same shape"),
]


@pytest.mark.parametrize(("call", "match"), FUNCTIONAL_ERRORS)
def test_functional_core_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(torch.randn(4, 6, 3, 5))


def test_alignment_recovers_a_spatial_permutation() -> None:
    # b is a with its positions shuffled: aligning b back onto a's positions must give a again, so the
    # mix is a itself whatever lam is. Independent of the plan's details, it checks the direction.
    torch.manual_seed(0)
    a = torch.randn(2, 16, 3, 3) * 3
    perm = torch.randperm(9)
    b = a.flatten(2)[:, :, perm].reshape(a.shape)
    mixed = align_mix_features(a, b, 0.3, direction="to_a", eps=0.01, max_iter=500)
    torch.testing.assert_close(mixed, a, rtol=0.02, atol=0.05)
    mixed = align_mix_features(a, b, 0.3, direction="to_b", eps=0.01, max_iter=500)
    torch.testing.assert_close(mixed, b, rtol=0.02, atol=0.05)


@pytest.mark.parametrize("batch_size", [1, 4, 5])
def test_flip_pair_plans_are_the_full_solve(batch_size: int) -> None:
    torch.manual_seed(0)
    points = torch.randn(batch_size, 9, 6)
    plans = flip_pair_plans(points, **TIGHT)
    for i in range(batch_size):  # the transposed half is exact; the solved half matches a full solve
        torch.testing.assert_close(plans[batch_size - 1 - i], plans[i].T)
    torch.testing.assert_close(plans, transport_plan(points, points.flip(0), **TIGHT), rtol=0, atol=1e-5)
    torch.testing.assert_close(plans.sum(2), torch.full((batch_size, 9), 1 / 9), rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_training_step(capture) -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES).cuda()
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (8,), device="cuda")
    with create_mixup("alignmixup", model=model, num_classes=NUM_CLASSES, input_prob=0.0) as mix:
        with capture(model.layer4) as plain, torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
        np.random.seed(0)
        x_in, target = mix(x, y)
        assert target.device == x.device
        with capture(model.layer4) as mixed, torch.autocast("cuda", dtype=torch.bfloat16):
            loss = SoftTargetCrossEntropy()(model(x_in), target)
        loss.backward()
    m = mixed[0]
    assert m.dtype == torch.bfloat16 and m.is_contiguous(memory_format=torch.channels_last)
    expected = _hand_align(plain[0].float(), _lam(mix, x).cuda(), mix.last_draw.direction)
    torch.testing.assert_close(m.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name", list_mixups())
def test_timm_train_py_mixup_args(resnet, make_batch, name: str) -> None:
    # The dict timm's train.py builds from its flags (--mixup 2.0 --cutmix 0 for the methods that do not cut).
    feature = not get_mixup_class(name).supports_cutmix
    mixup_args = dict(
        mixup_alpha=2.0 if feature else 0.8, cutmix_alpha=0.0 if feature else 1.0, cutmix_minmax=None, prob=1.0,
        switch_prob=0.5, mode="batch", label_smoothing=0.1, num_classes=NUM_CLASSES,
    )
    x, y = make_batch()
    with create_mixup(name, model=resnet, **mixup_args) as mix:
        np.random.seed(0)
        x_in, target = mix(x.clone(), y)
        resnet(x_in)
        assert target.shape == (4, NUM_CLASSES)
        mix.mixup_enabled = False  # what train.py does at --mixup-off-epoch
        _, target = mix(x.clone(), y)
    torch.testing.assert_close(target.max(1).values, torch.full((4,), 0.9 + 0.1 / NUM_CLASSES))
