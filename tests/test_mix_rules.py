"""The hook rules of the feature-space methods: mixed targets never meet unmixed features silently.

Each test states a rule of mixkit/mix/hooks.py (docs/mixing.md) and checks it beyond one example: which
forwards consume an armed mix, how to re-arm for SAM, what copies, pickles, removed or doubled mixing
functions do, wrong class counts, pooled layers, channels-last stages, torch.compile, bad inputs.
"""

# timm's Mixup draws from NumPy's global generator, so the tests seed exactly that one.
# ruff: noqa: NPY002

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import timm
import torch
from torch import nn

from mixkit.mix import (
    FeatureMixupBase,
    align_mix_features,
    create_mixup,
    feature_points,
    flip_pair_plans,
    get_mixup_class,
    list_mixups,
    manifold_mix_features,
)
from mixkit.mix.factory import accepted_arguments

NUM_CLASSES = 5
# From the registry: the methods that arm hooks (every one a FeatureMixupBase) and all of them.
METHODS = list_mixups()
FEATURE_METHODS = [name for name in METHODS if issubclass(get_mixup_class(name), FeatureMixupBase)]


class TinyNet(nn.Module):
    """Two convolutions and a head, with timm-style feature_info and num_classes (fast on a CPU)."""

    def __init__(self, num_classes: int = NUM_CLASSES, channels: int = 6, nhwc: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.stage = nn.Conv2d(channels, channels, 3, padding=1, stride=2)
        self.head = nn.Linear(channels, num_classes)
        self.nhwc = nhwc
        self.feature_info = [dict(module="stage", num_chs=channels, reduction=2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(torch.relu(self.stem(x))).mean((2, 3)))


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().train()


def _batch(batch_size: int = 4, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, size, size, generator=g), torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)


def _feature_kwargs(method: str) -> dict:
    """Settings that make a feature method arm a hook on TinyNet's stage every batch."""
    forced = {"input_prob": 0.0} if "input_prob" in accepted_arguments(get_mixup_class(method)) else {}
    return {"layers": "stage", **forced}


def _create(method: str, model: nn.Module, **kwargs):
    return create_mixup(method, model=model, **{"num_classes": NUM_CLASSES, **_feature_kwargs(method), **kwargs})


def _hand_manifold(model: TinyNet, x: torch.Tensor, lam: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        f = model.stage(torch.relu(model.stem(x)))
        return model.head(manifold_mix_features(f, f.flip(0), torch.from_numpy(lam)).mean((2, 3)))


# -- item 10: the mix fires on the first forward with grad enabled, in training mode ----------------
@pytest.mark.parametrize("grad_off", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("method", FEATURE_METHODS)
def test_forwards_without_grad_do_not_consume_the_mix(tiny, grad_off, method: str) -> None:
    x, y = _batch()
    with torch.no_grad():
        plain = tiny(x)
    with _create(method, tiny) as mix:
        np.random.seed(0)
        mix(x, y)
        for _ in range(2):  # a logging pass and a teacher pass, say
            with grad_off():
                torch.testing.assert_close(tiny(x), plain)
        assert mix.hooks.armed == "stage" and mix.hooks.num_fired == 0
        mixed = tiny(x)
        assert mix.hooks.num_fired == 1 and mix.hooks.armed is None
        assert not torch.allclose(mixed, plain, atol=1e-4)
        if method == "manifold":
            torch.testing.assert_close(mixed.detach(), _hand_manifold(tiny, x, mix.last_draw.lam))


@pytest.mark.parametrize("method", FEATURE_METHODS)
def test_rearm_repeats_the_mix_for_a_second_forward(tiny, method: str) -> None:
    # SAM: the second forward (at perturbed weights) must mix with the same lam, pairing and direction.
    x, y = _batch()
    with _create(method, tiny) as mix:
        np.random.seed(0)
        mix(x, y)
        first = tiny(x).detach()
        state = (mix.last_draw.lam.copy(), mix.last_draw.layer, mix.last_draw.direction)
        assert torch.allclose(tiny(x).detach(), first) is False  # a later forward alone is plain
        mix.rearm()
        assert mix.hooks.armed == "stage"
        torch.testing.assert_close(tiny(x).detach(), first)  # same weights: the same mixed forward
        assert (mix.last_draw.lam.copy(), mix.last_draw.layer, mix.last_draw.direction)[1:] == state[1:]
        np.testing.assert_array_equal(mix.last_draw.lam, state[0])
        mix.mixup_enabled = False
        mix(x, y)
        mix.rearm()  # nothing was armed by the last call: nothing to re-arm
        assert mix.hooks.armed is None


# -- item 11: copies, removal, double arming, eval mode --------------------------------------------
def test_deepcopy_of_a_mixing_function_is_refused(tiny) -> None:
    with _create("manifold", tiny) as mix, pytest.raises(TypeError, match=r"deepcopy.*copy the model.*per model"):
        copy.deepcopy(mix)
    with _create("manifold", tiny) as mix, pytest.raises(TypeError, match=r"copy.copy.*share its hooks.*per model"):
        copy.copy(mix)


def test_deepcopy_of_the_model_is_shared_and_never_mixed(tiny) -> None:
    # An EMA copy made after the mixing function carries the hooks along; it must neither mix nor consume.
    x, y = _batch()
    with _create("manifold", tiny) as mix:
        ema = copy.deepcopy(tiny).train()
        with torch.no_grad():
            plain = ema(x)
        np.random.seed(0)
        mix(x, y)
        torch.testing.assert_close(ema(x).detach(), plain)
        assert mix.hooks.armed == "stage"
        tiny(x)
        assert mix.hooks.num_fired == 1


@pytest.mark.parametrize("how", ["remove", "with"])
def test_a_removed_mixing_function_refuses_to_mix(tiny, how: str) -> None:
    x, y = _batch()
    mix = _create("alignmixup", tiny)
    if how == "remove":
        mix.remove()
    else:
        with mix:
            pass
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny.modules())
    for call in (lambda: mix(x, y), mix.rearm):
        with pytest.raises(RuntimeError, match=r"removed.*create a new one"):
            call()


@pytest.mark.parametrize(("first", "second"), [("manifold", "alignmixup"), ("alignmixup", "alignmixup")])
def test_two_armed_mixing_functions_on_one_model_are_an_error(tiny, first: str, second: str) -> None:
    x, y = _batch()
    with _create(first, tiny) as one, _create(second, tiny) as two:
        np.random.seed(0)
        one(x, y)
        with pytest.raises(RuntimeError, match="another mixkit mixing function.*mix twice"):
            two(x, y)
        tiny(x)  # one's mix consumed: two may arm now
        two(x, y)
        tiny(x)
        assert one.hooks.num_fired == 1 and two.hooks.num_fired == 1


@pytest.mark.parametrize(
    ("setup", "match"),
    [("eval", r"eval mode.*model.train\(\)"), ("no_grad", r"gradients disabled"), ("none", "called twice")],
)
def test_an_unused_mix_warns_with_its_cause(tiny, setup: str, match: str) -> None:
    x, y = _batch()
    if setup == "eval":
        tiny.eval()  # left in eval for the whole loop: never mixes
    with _create("manifold", tiny) as mix:
        for step in range(3):
            np.random.seed(step)
            if step:
                with pytest.warns(RuntimeWarning, match=match):
                    mix(x, y)
            else:
                mix(x, y)
            if setup == "eval":
                tiny(x)
            elif setup == "no_grad":
                with torch.no_grad():
                    tiny(x)
        assert mix.hooks.num_fired == 0


def test_a_trained_deep_copy_is_named_and_pickles_after_remove(tiny) -> None:
    """Training a deep copy (an EMA or teacher made after create_mixup) never mixes: the warning says so;
    after remove() the hooks the copy still holds are inert, so the copy pickles."""
    x, y = _batch()
    with _create("manifold", tiny) as mix:
        copy_ = copy.deepcopy(tiny)
        for step in range(2):
            np.random.seed(step)
            if step:
                with pytest.warns(RuntimeWarning, match=r"deep copy of the model.*train the model that was given"):
                    mix(x, y)
            else:
                mix(x, y)
            copy_(x)
        assert mix.hooks.num_fired == 0
        with pytest.raises(TypeError, match=r"mixkit.*remove\(\)"):
            pickle.dumps(copy_)
    restored = pickle.loads(pickle.dumps(copy_))
    torch.testing.assert_close(restored(x), tiny(x))


# -- item 12: pooled layers and channels-last stages ------------------------------------------------
def test_a_pooled_layer_is_refused_by_alignmixup(make_batch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, NUM_CLASSES))
    x, y = make_batch(size=8)
    with create_mixup("alignmixup", model=model, layers="1", input_prob=0.0, num_classes=NUM_CLASSES) as mix:
        np.random.seed(0)
        mix(x, y)
        with pytest.raises(ValueError, match=r"layer '1' outputs \(4, 6, 1, 1\).*plain mixup.*before global pooling"):
            model(x)


class NHWCNet(nn.Module):
    """A stage that emits (B, H, W, C) maps and a feature_info that says its channel count."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 7, 3, padding=1)
        self.stage = nn.Linear(7, 7)  # applied on channels-last maps, as timm's Swin / MambaOut blocks are
        self.head = nn.Linear(7, NUM_CLASSES)
        self.feature_info = [dict(module="stage", num_chs=7, reduction=1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(self.stem(x).permute(0, 2, 3, 1)).mean((1, 2)))


def _nhwc_models() -> dict[str, tuple[nn.Module, str, int]]:
    return {
        "feature_info": (NHWCNet, "stage", 4),
        "swin": (lambda: timm.create_model(
            "swin_tiny_patch4_window7_224", pretrained=False, num_classes=NUM_CLASSES, img_size=64,
            window_size=2, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), drop_path_rate=0.0), "layers.3", 64),
        "mambaout": (lambda: timm.create_model(
            "mambaout_femto", pretrained=False, num_classes=NUM_CLASSES, dims=(4, 8, 12, 16),
            depths=(1, 1, 1, 1)), "stages.3", 64),
    }


@pytest.mark.parametrize("name", ["feature_info", "swin", "mambaout"])
def test_channels_last_stages_are_detected(make_batch, capture, name: str) -> None:
    build, layer, size = _nhwc_models()[name]
    torch.manual_seed(0)
    model = build().train()
    x, y = make_batch(size=size)
    module = model.get_submodule(layer)
    with create_mixup("alignmixup", model=model, input_prob=0.0, direction="to_a", num_classes=NUM_CLASSES) as mix:
        assert mix.layers == (layer,)
        with torch.no_grad(), capture(module) as plain:
            model(x)
        np.random.seed(0)
        mix(x, y)
        with capture(module) as mixed:
            model(x)
    f = plain[0]
    assert f.ndim == 4 and f.shape[1] == f.shape[2] != f.shape[3]  # (B, H, W, C)
    assert mix._layouts[layer] == "nhwc"
    lam = torch.from_numpy(mix.last_draw.lam)
    # The same plans (AlignMixup's flip-pair solve) on the points of each reading of the map.
    for layout, same in (("nhwc", True), ("nchw", False)):
        plan = flip_pair_plans(feature_points(f, layout))
        expected = align_mix_features(f, f.flip(0), lam, layout=layout, plan=plan)
        assert torch.allclose(mixed[0], expected, rtol=1e-4, atol=1e-5) is same


# -- item 13: torch.compile code traced before the hooks existed ------------------------------------
@pytest.mark.slow
def test_compiled_before_the_hooks_names_compile_and_the_fix(tiny) -> None:
    x, y = _batch()
    compiled = torch.compile(tiny, backend="aot_eager")
    try:
        compiled(x).sum().backward()  # traced without mixkit's hooks
        with _create("manifold", compiled) as mix:
            np.random.seed(0)
            mix(x, y)
            with pytest.raises(RuntimeError, match=r"torch.compile.*traced before.*torch.compiler.reset\(\)"):
                compiled(x)
            torch.compiler.reset()  # the fix the message names
            np.random.seed(0)
            mix(x, y)
            out = compiled(x)
            assert mix.hooks.num_fired == 1
            torch.testing.assert_close(out.detach(), _hand_manifold(tiny, x, mix.last_draw.lam))
    finally:
        torch.compiler.reset()


@pytest.mark.slow
def test_a_compiled_train_step_traced_before_the_hooks_is_named(tiny) -> None:
    """torch.compile on the step function (not the model): its code never runs the hooks added later, so
    the unused mix warns with that cause, and the fix it names makes the step mix."""
    x, y = _batch()

    @torch.compile(backend="aot_eager")
    def train_step(model, inputs, targets):
        return -(torch.log_softmax(model(inputs), -1) * targets).sum(-1).mean()

    try:
        train_step(tiny, x, torch.full((len(x), NUM_CLASSES), 1 / NUM_CLASSES))  # traced without the hooks
        with _create("manifold", tiny) as mix:
            for step in range(2):
                np.random.seed(step)
                if step:
                    with pytest.warns(RuntimeWarning, match=r"called twice.*torch.compile traced before "
                                                             r"create_mixup.*torch.compiler.reset\(\)"):
                        inputs, targets = mix(x, y)
                else:
                    inputs, targets = mix(x, y)
                train_step(tiny, inputs, targets)
            assert mix.hooks.num_fired == 0
            torch.compiler.reset()  # the fix the warning names
            mix.hooks.disarm()
            np.random.seed(0)
            inputs, targets = mix(x, y)
            train_step(tiny, inputs, targets)
            assert mix.hooks.num_fired == 1
    finally:
        torch.compiler.reset()


# -- item 14: pickling -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", FEATURE_METHODS)
def test_pickling_is_refused_with_the_fix(tiny, method: str) -> None:
    with _create(method, tiny) as mix:
        for obj in (tiny, mix):
            with pytest.raises(TypeError, match=r"mixkit.*remove\(\).*state_dict"):
                torch.save(obj, io.BytesIO())
            with pytest.raises(TypeError, match=r"mixkit.*remove\(\)"):
                pickle.dumps(obj)
    buffer = io.BytesIO()
    torch.save(tiny, buffer)  # after remove(): a plain model again
    buffer.seek(0)
    assert isinstance(torch.load(buffer, weights_only=False), TinyNet)


# -- item 15: num_classes against the model's output ---------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_num_classes_is_checked_at_the_first_forward(method: str) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    del model.feature_info  # a plain module: nothing says its class count before it runs
    x, y = _batch()

    def make(num_classes):
        if get_mixup_class(method).uses_model_gradient:  # prob 1: the saliency pass runs on every batch
            return create_mixup(method, model=model, num_classes=num_classes, prob=1.0)
        if method not in FEATURE_METHODS:  # input methods: the model is only given for this check
            return create_mixup(method, model=model, num_classes=num_classes)
        return _create(method, model, num_classes=num_classes)

    with make(1000) as mix:
        np.random.seed(0)
        wrong = r"outputs 5 classes.*num_classes=1000.*pass num_classes=5"
        if get_mixup_class(method).uses_model_gradient:  # the saliency pass is the first training forward
            with pytest.raises(ValueError, match=wrong):
                mix(x, y)
        else:
            mix(x, y)
            with pytest.raises(ValueError, match=wrong):
                model(x)
    with make(NUM_CLASSES) as mix:
        np.random.seed(0)
        mixed, target = mix(x, y)
        assert model(mixed).shape == target.shape  # the right count passes


# -- item 16 and issue 11: bad inputs, label checks ------------------------------------------------------
BAD_INPUTS = [
    (lambda x, y: (x[0], y), ValueError, r"\(B, C, H, W\) image batch, got shape \(3, 8, 8\)"),
    (lambda x, y: (x.flatten(2), y), ValueError, r"\(B, C, H, W\) image batch"),
    (lambda x, y: (x.to("meta"), y), ValueError, "meta device"),
    (lambda x, y: (x, y.to("meta")), ValueError, "meta device"),
    (lambda x, y: (x, y + NUM_CLASSES), ValueError, r"\[0, num_classes\) = \[0, 5\), got min 7 and max 9"),
    (lambda x, y: (x, y - 10), ValueError, r"\[0, num_classes\)"),
    (lambda x, y: (x, y.float()), TypeError, "integer class indices"),
    (lambda x, y: ((x * 100).to(torch.uint8), y), TypeError, "floating-point"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("bad", "error", "match"), BAD_INPUTS)
def test_bad_inputs_are_clear_errors(tiny, method: str, bad, error, match: str) -> None:
    kwargs = _feature_kwargs(method) if method in FEATURE_METHODS else {}
    with create_mixup(method, model=tiny, num_classes=NUM_CLASSES, **kwargs) as mix:
        with pytest.raises(error, match=match):
            mix(*bad(*_batch()))
        assert getattr(mix, "hooks", None) is None or mix.hooks.armed is None  # nothing armed by a refused call


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_mixing_call_has_no_host_sync_and_reports_bad_labels_late(method: str) -> None:
    torch.manual_seed(0)
    model = TinyNet().cuda()
    x, y = (t.cuda() for t in _batch())
    kwargs = _feature_kwargs(method) if method in FEATURE_METHODS else {}
    with create_mixup(method, model=model, num_classes=NUM_CLASSES, **kwargs) as mix:
        np.random.seed(0)
        mix(x, y)  # warm-up: CUDA and pinned-memory initialisation may synchronise once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host sync in the calls below raises
        try:
            for _ in range(3):
                if getattr(mix, "hooks", None) is not None:
                    mix.hooks.disarm()
                mix(x, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        # A bad batch is reported by a later call once its check has landed, never as a device assert.
        with pytest.raises(ValueError, match=r"\[0, num_classes\).*got min 7 and max 9 in the batch of mixing call 5"):
            mix(x, y + NUM_CLASSES)
            torch.cuda.synchronize()
            mix(x, y)
