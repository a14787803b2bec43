"""Feature-space methods ('manifold', 'alignmixup') on stock timm models and plain nn.Modules, on CPU.

References are computed by hand: the plain forward's features at the layer (captured with a hook), mixed
with the formulas (and mixkit.ot.align for the transport), then run through the rest of the network.
"""

# timm's Mixup draws from NumPy's global generator, so the tests seed exactly that one.
# ruff: noqa: NPY002

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
    manifold_mix_features,
)
from mixkit.ot import align, transport_plan

NUM_CLASSES = 5
# AlignMixup solves half of the flip-pair plans and transposes them; a tight solver tolerance makes that
# agree with the hand reference (which solves every pair with mixkit.ot.align) to float precision.
TIGHT = dict(tol=1e-7, max_iter=5000)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES).train()


@pytest.fixture(scope="module")
def convnext() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("convnext_atto", pretrained=False, num_classes=NUM_CLASSES).train()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=NUM_CLASSES, img_size=32, patch_size=8, depth=2
    ).train()


def _batch(batch_size: int = 4, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, size, size, generator=g), torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)


@contextlib.contextmanager
def capture(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Records the module's outputs (as seen after any hooks registered earlier)."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        yield seen
    finally:
        handle.remove()


def _lam(mix: ManifoldMixup | AlignMixup, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(mix.last_lam).to(like.dtype)


def _hand_align(f: torch.Tensor, lam: torch.Tensor, direction: str) -> torch.Tensor:
    """AlignMixup of a (B, C, H, W) map with its flip partner, written out from the paper's formulas."""
    a = f.flatten(2).transpose(1, 2)
    b = a.flip(0)
    w = lam.reshape(-1, 1, 1)
    if direction == "to_a":
        mixed = w * a + (1 - w) * align(a, b, direction="to_x", **TIGHT)
    else:
        mixed = w * align(a, b, direction="to_y", **TIGHT) + (1 - w) * b
    return mixed.transpose(1, 2).reshape(f.shape)


@pytest.mark.parametrize("direction", ["to_a", "to_b"])
def test_alignmixup_resnet_matches_hand_mix_and_fires_once(resnet: nn.Module, direction: str) -> None:
    x, y = _batch()
    with torch.no_grad():
        with capture(resnet.layer4) as feats:
            plain = resnet(x)
        mix = create_mixup(
            "alignmixup", model=resnet, num_classes=NUM_CLASSES, input_prob=0.0, direction=direction, **TIGHT
        )
        try:
            np.random.seed(1)
            x_in, target = mix(x, y)
            assert x_in is x and mix.last_layer == "layer4" and mix.last_direction == direction
            mixed = resnet(x_in)
            assert mix.hooks.num_fired == 1 and mix.hooks.armed is None
            expected = resnet.forward_head(_hand_align(feats[0], _lam(mix, x), direction))
            torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-4)
            assert not torch.allclose(mixed, plain, atol=1e-3)
            torch.testing.assert_close(resnet(x), plain)  # the next forward is plain again
            assert mix.hooks.num_fired == 1
            torch.testing.assert_close(target.sum(1), torch.ones(len(y)))
            lam = float(mix.last_lam[0])
            smooth = 0.1 / NUM_CLASSES
            onehot = torch.nn.functional.one_hot(y, NUM_CLASSES).float() * (1 - 0.1) + smooth
            torch.testing.assert_close(target, lam * onehot + (1 - lam) * onehot.flip(0))
        finally:
            mix.remove()


def test_manifold_resnet_matches_hand_mix(resnet: nn.Module) -> None:
    x, y = _batch()
    mix = create_mixup("manifold", model=resnet, layers=["layer2"], num_classes=NUM_CLASSES, mixup_alpha=1.0)
    try:
        with torch.no_grad():
            with capture(resnet.layer2) as feats:
                plain = resnet(x)
            np.random.seed(0)
            mix(x, y)
            mixed = resnet(x)
            hand = manifold_mix_features(feats[0], feats[0].flip(0), _lam(mix, x))
            torch.testing.assert_close(hand, _lam(mix, x)[0] * feats[0] + (1 - _lam(mix, x)[0]) * feats[0].flip(0))
            expected = resnet.forward_head(resnet.layer4(resnet.layer3(hand)))
            torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-4)
            assert not torch.allclose(mixed, plain, atol=1e-3)
    finally:
        mix.remove()


def test_manifold_default_layers_and_input_branch(resnet: nn.Module) -> None:
    mix = create_mixup("manifold", model=resnet, num_classes=NUM_CLASSES)
    try:
        assert mix.layers == ("input", "layer1", "layer2")  # the paper's k in {0, 1, 2}
        x, y = _batch()
        chosen = set()
        for seed in range(12):
            np.random.seed(seed)
            x_in, _ = mix(x, y)
            chosen.add(mix.last_layer)
            if mix.last_layer == "input":
                lam = _lam(mix, x).reshape(-1, 1, 1, 1)
                torch.testing.assert_close(x_in, lam * x + (1 - lam) * x.flip(0))
                assert mix.hooks.armed is None
            else:
                assert x_in is x and mix.hooks.armed == mix.last_layer
                mix.hooks.disarm()
        assert chosen == {"input", "layer1", "layer2"}
    finally:
        mix.remove()


def test_alignmixup_input_branch_and_defaults(convnext: nn.Module) -> None:
    mix = create_mixup("alignmixup", model=convnext, num_classes=NUM_CLASSES)
    try:
        assert mix.layers == ("stages.3",) and mix.input_prob == 0.5 and mix.mixup_alpha == 2.0
        x, y = _batch()
        branches, directions = [], set()
        for seed in range(40):
            np.random.seed(seed)
            x_in, _ = mix(x, y)
            branches.append(mix.last_layer)
            if mix.last_layer == "input":
                lam = _lam(mix, x).reshape(-1, 1, 1, 1)
                torch.testing.assert_close(x_in, lam * x + (1 - lam) * x.flip(0))
            else:
                directions.add(mix.last_direction)
                mix.hooks.disarm()
        assert 8 <= branches.count("input") <= 32 and directions == {"to_a", "to_b"}
    finally:
        mix.remove()


def test_eval_and_disabled_never_mix(resnet: nn.Module) -> None:
    x, y = _batch()
    mix = create_mixup("alignmixup", model=resnet, num_classes=NUM_CLASSES, input_prob=0.0)
    try:
        with torch.no_grad():
            plain_train = resnet(x)
            resnet.eval()
            plain_eval = resnet(x)
            np.random.seed(0)
            mix(x, y)
            torch.testing.assert_close(resnet(x), plain_eval)  # eval: untouched, mix stays armed
            assert mix.hooks.armed == "layer4" and mix.hooks.num_fired == 0
            resnet.train()
            assert not torch.allclose(resnet(x), plain_train, atol=1e-3)  # consumes the armed mix
            assert mix.hooks.num_fired == 1
            mix.mixup_enabled = False
            _, target = mix(x, y)
            assert mix.hooks.armed is None and mix.last_lam is None
            torch.testing.assert_close(resnet(x), plain_train)
            onehot = torch.nn.functional.one_hot(y, NUM_CLASSES).float() * 0.9 + 0.1 / NUM_CLASSES
            torch.testing.assert_close(target, onehot)
    finally:
        resnet.train()
        mix.remove()


@pytest.mark.parametrize(("method", "layer"), [("alignmixup", "stages.3"), ("manifold", "stages.1")])
def test_gradients_reach_both_samples(convnext: nn.Module, method: str, layer: str) -> None:
    # ConvNeXt normalises per sample (LayerNorm), so cross-sample gradients can only come from the mix.
    x, y = _batch()
    x.requires_grad_(True)
    kwargs = dict(input_prob=0.0) if method == "alignmixup" else {}
    mix = create_mixup(method, model=convnext, layers=layer, num_classes=NUM_CLASSES, **kwargs)
    try:
        np.random.seed(0)
        x_in, target = mix(x, y)
        out = convnext(x_in)
        SoftTargetCrossEntropy()(out[:1], target[:1]).backward()
        per_sample = x.grad.abs().flatten(1).sum(1)
        assert per_sample[0] > 0 and per_sample[-1] > 0  # the sample and its flip partner
        assert per_sample[1] == 0 and per_sample[2] == 0  # nobody else
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in convnext.parameters())
    finally:
        convnext.zero_grad(set_to_none=True)
        mix.remove()


@pytest.mark.parametrize("method", ["alignmixup", "manifold"])
def test_deterministic_under_seed(convnext: nn.Module, method: str) -> None:
    x, y = _batch()

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        mix = create_mixup(method, model=convnext, layers=["stages.2", "stages.3"], num_classes=NUM_CLASSES)
        try:
            np.random.seed(seed)
            torch.manual_seed(seed)
            outs, targets = [], []
            with torch.no_grad():
                for _ in range(4):
                    x_in, t = mix(x, y)
                    outs.append(convnext(x_in))
                    targets.append(t)
            return torch.cat(outs), torch.cat(targets)
        finally:
            mix.remove()

    out1, t1 = run(3)
    out2, t2 = run(3)
    assert torch.equal(out1, out2) and torch.equal(t1, t2)
    out3, t3 = run(4)
    assert not torch.equal(t1, t3)


def test_vit_prefix_token_is_interpolated_and_patches_aligned(vit: nn.Module) -> None:
    x, y = _batch(size=32)
    assert vit.num_prefix_tokens == 1
    mix = create_mixup("alignmixup", model=vit, num_classes=NUM_CLASSES, input_prob=0.0, direction="to_a", **TIGHT)
    try:
        assert mix.layers == ("blocks.1",) and mix.num_prefix_tokens == 1
        with torch.no_grad():
            with capture(vit.blocks[1]) as plain:
                vit(x)
            np.random.seed(0)
            mix(x, y)
            with capture(vit.blocks[1]) as mixed:  # registered after mixkit's hook: sees the mixed output
                out = vit(x)
        f, m, lam = plain[0], mixed[0], _lam(mix, x).reshape(-1, 1)
        torch.testing.assert_close(m[:, 0], lam * f[:, 0] + (1 - lam) * f.flip(0)[:, 0])
        patches = f[:, 1:]
        w = lam.reshape(-1, 1, 1)
        torch.testing.assert_close(
        m[:, 1:], w * patches + (1 - w) * align(patches, patches.flip(0), **TIGHT), rtol=1e-3, atol=2e-4
    )
        torch.testing.assert_close(out, vit.forward_head(vit.norm(m)), rtol=1e-4, atol=1e-4)
    finally:
        mix.remove()


@pytest.mark.parametrize("method", ["alignmixup", "manifold"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_odd_batches_keep_the_middle_sample(convnext: nn.Module, method: str, batch_size: int) -> None:
    x, y = _batch(batch_size)
    kwargs = dict(input_prob=0.0) if method == "alignmixup" else {}
    mix = create_mixup(method, model=convnext, layers="stages.3", num_classes=NUM_CLASSES, label_smoothing=0.0, **kwargs)
    try:
        with torch.no_grad():
            with capture(convnext.stages[3]) as plain:
                convnext(x)
            np.random.seed(0)
            _, target = mix(x, y)
            with capture(convnext.stages[3]) as mixed:
                convnext(x)
        mid = batch_size // 2
        torch.testing.assert_close(mixed[0][mid], plain[0][mid])
        assert target[mid, y[mid]] == 1.0
        if batch_size == 1:
            assert mix.last_lam is None and mix.hooks.num_fired == 0  # nothing to pair with
        else:
            assert mix.hooks.num_fired == 1 and not torch.allclose(mixed[0][0], plain[0][0])
    finally:
        mix.remove()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_channels_last_and_autocast(resnet: nn.Module, dtype: torch.dtype) -> None:
    x, y = _batch()
    model = resnet.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
    mix = create_mixup("alignmixup", model=model, num_classes=NUM_CLASSES, input_prob=0.0, direction="to_b", **TIGHT)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            with capture(model.layer4) as plain:
                model(x)
            np.random.seed(0)
            mix(x, y)
            with capture(model.layer4) as mixed:
                out = model(x)
        f, m = plain[0], mixed[0]
        assert f.dtype == m.dtype == dtype
        assert m.is_contiguous(memory_format=torch.channels_last) == f.is_contiguous(memory_format=torch.channels_last)
        expected = _hand_align(f.float(), _lam(mix, x), "to_b")
        torch.testing.assert_close(m.float(), expected, rtol=0.05, atol=0.05)
        assert torch.isfinite(out).all()
    finally:
        model.to(memory_format=torch.contiguous_format)
        mix.remove()


def test_any_module_by_name() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, NUM_CLASSES),
    )
    x, y = _batch(size=8)
    with pytest.raises(ValueError, match="no timm feature_info"):
        create_mixup("alignmixup", model=model, num_classes=NUM_CLASSES)
    mix = create_mixup(
        "alignmixup", model=model, layers="2", num_classes=NUM_CLASSES, input_prob=0.0, direction="to_a", **TIGHT
    )
    try:
        with torch.no_grad():
            f = model[:3](x)
            np.random.seed(0)
            mix(x, y)
            out = model(x)
        torch.testing.assert_close(out, model[3:](_hand_align(f, _lam(mix, x), "to_a")), rtol=1e-4, atol=1e-4)
    finally:
        mix.remove()


def test_bad_layers_and_arguments(resnet: nn.Module) -> None:
    x, y = _batch()
    with pytest.raises(ValueError, match=r"'layer5' does not exist.*feature_info.*layer4"):
        create_mixup("alignmixup", model=resnet, layers="layer5", num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="out of range"):
        create_mixup("manifold", model=resnet, layers=[7], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="input_prob"):
        create_mixup("alignmixup", model=resnet, layers=["input", "layer4"], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="does not do CutMix"):
        create_mixup("alignmixup", model=resnet, cutmix_alpha=1.0, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="needs the model"):
        create_mixup("manifold", num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="mixup_alpha must be > 0"):
        create_mixup("alignmixup", model=resnet, mixup_alpha=0.0, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="direction"):
        create_mixup("alignmixup", model=resnet, direction="sideways", num_classes=NUM_CLASSES)
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        create_mixup("manifold", model=nn.DataParallel(resnet), layers="layer1", num_classes=NUM_CLASSES)
    # A layer after pooling is no feature map: a clear error at the forward that would mix it.
    mix = create_mixup("alignmixup", model=resnet, layers="global_pool", input_prob=0.0, num_classes=NUM_CLASSES)
    try:
        np.random.seed(0)
        mix(x, y)
        with pytest.raises(TypeError, match=r"'global_pool'.*feature map"), torch.no_grad():
            resnet(x)
        with pytest.raises(ValueError, match=r"\[0, num_classes\)"):
            mix(x, y + NUM_CLASSES)
        with pytest.raises(TypeError, match="integer class indices"):
            mix(x, y.float())
    finally:
        mix.remove()
    tuple_model = nn.Sequential(nn.Identity())
    tuple_model.add_module("split", _Split())
    mix = create_mixup("manifold", model=tuple_model, layers="split", num_classes=NUM_CLASSES)
    try:
        np.random.seed(0)
        mix(x, y)
        with pytest.raises(TypeError, match="returns tuple, not a tensor"):
            tuple_model(x)
    finally:
        mix.remove()


class _Split(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def test_unconsumed_and_double_arming(resnet: nn.Module) -> None:
    x, y = _batch()
    mix = create_mixup("manifold", model=resnet, layers="layer3", num_classes=NUM_CLASSES)
    try:
        np.random.seed(0)
        mix(x, y)
        with pytest.warns(RuntimeWarning, match="never consumed"):
            mix(x, y)
        with torch.no_grad():
            resnet(x)
        assert mix.hooks.num_fired == 1
    finally:
        mix.remove()


def test_timm_resnet_checkpointing_bypass_is_an_error(resnet: nn.Module) -> None:
    x, y = _batch()
    mix = create_mixup("alignmixup", model=resnet, num_classes=NUM_CLASSES, input_prob=0.0)
    resnet.set_grad_checkpointing(True)
    try:
        np.random.seed(0)
        mix(x, y)
        with pytest.raises(RuntimeError, match=r"set_grad_checkpointing\(False\).*'layer4.1'"):
            resnet(x)
        assert mix.hooks.armed is None
    finally:
        resnet.set_grad_checkpointing(False)
        mix.remove()


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("method", ["alignmixup", "manifold"])
def test_checkpointed_block_replays_the_same_mix(vit: nn.Module, method: str, reentrant: bool) -> None:
    from timm.layers import set_reentrant_ckpt, use_reentrant_ckpt

    x, y = _batch(size=32)
    kwargs = dict(input_prob=0.0) if method == "alignmixup" else {}
    mix = create_mixup(method, model=vit, layers="blocks.0", num_classes=NUM_CLASSES, **kwargs)
    previous = use_reentrant_ckpt()

    def grads(checkpointing: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        vit.zero_grad(set_to_none=True)
        vit.set_grad_checkpointing(checkpointing)
        np.random.seed(0)
        x_in, target = mix(x, y)
        loss = SoftTargetCrossEntropy()(vit(x_in), target)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in vit.parameters()]

    try:
        set_reentrant_ckpt(reentrant)
        loss_ref, grads_ref = grads(False)
        loss_ckpt, grads_ckpt = grads(True)
        torch.testing.assert_close(loss_ckpt, loss_ref)
        for g_ckpt, g_ref in zip(grads_ckpt, grads_ref, strict=True):
            torch.testing.assert_close(g_ckpt, g_ref, rtol=1e-4, atol=1e-5)
        assert mix.hooks.num_fired == 2  # once per armed call; replays during backward do not count
    finally:
        set_reentrant_ckpt(previous)
        vit.set_grad_checkpointing(False)
        vit.zero_grad(set_to_none=True)
        mix.remove()


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
    with pytest.raises(ValueError, match="same shape"):
        align_mix_features(a, a[:, :3], 0.5)
    with pytest.raises(ValueError, match="layout 'nchw' expects 4-d"):
        align_mix_features(a[0], a[1], 0.5)
    with pytest.raises(ValueError, match="direction"):
        align_mix_features(a, a, 0.5, direction="up")
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        align_mix_features(a[:, 0], a[:, 1], 0.5, layout="nlc", num_prefix_tokens=3)


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


def test_deepcopy_of_the_model_is_not_mixed(convnext: nn.Module) -> None:
    # An EMA copy made after the mixup object carries the hooks along; it must neither mix nor consume.
    import copy

    x, y = _batch()
    mix = create_mixup("manifold", model=convnext, layers="stages.2", num_classes=NUM_CLASSES)
    try:
        ema = copy.deepcopy(convnext).train()
        with torch.no_grad():
            plain = ema(x)
            np.random.seed(0)
            mix(x, y)
            torch.testing.assert_close(ema(x), plain)
            assert mix.hooks.armed == "stages.2"
            convnext(x)
            assert mix.hooks.num_fired == 1
    finally:
        mix.remove()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_training_step() -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES).cuda()
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (8,), device="cuda")
    mix = create_mixup("alignmixup", model=model, num_classes=NUM_CLASSES, input_prob=0.0)
    try:
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
        expected = _hand_align(plain[0].float(), _lam(mix, x).cuda(), mix.last_direction)
        torch.testing.assert_close(m.float(), expected, rtol=0.05, atol=0.05)
    finally:
        mix.remove()


@pytest.mark.parametrize("name", ["mixup", "cutmix", "mixup_cutmix", "manifold", "alignmixup"])
def test_timm_train_py_mixup_args(resnet: nn.Module, name: str) -> None:
    # The dict timm's train.py builds from its flags (--mixup 2.0 --cutmix 0 for the feature methods).
    feature = name in ("manifold", "alignmixup")
    mixup_args = dict(
        mixup_alpha=2.0 if feature else 0.8, cutmix_alpha=0.0 if feature else 1.0, cutmix_minmax=None, prob=1.0,
        switch_prob=0.5, mode="batch", label_smoothing=0.1, num_classes=NUM_CLASSES,
    )
    mix = create_mixup(name, model=resnet, **mixup_args)
    x, y = _batch()
    np.random.seed(0)
    x_in, target = mix(x.clone(), y)
    with torch.no_grad():
        resnet(x_in)
    assert target.shape == (4, NUM_CLASSES)
    mix.mixup_enabled = False  # what train.py does at --mixup-off-epoch
    _, target = mix(x.clone(), y)
    torch.testing.assert_close(target.max(1).values, torch.full((4,), 0.9 + 0.1 / NUM_CLASSES))
    if hasattr(mix, "remove"):
        mix.remove()
