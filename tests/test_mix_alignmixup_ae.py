"""AlignMixup/AE (mixkit/mix/alignmixup_ae.py): the gradient of one step against the loss written out by
hand, the decoder's images kept away from the classifier and the mixing, which steps train the decoder,
the encoder's gradient with ``detach_encoder``, the layer geometry, and bad arguments."""

# The methods draw from NumPy's global generator, as timm's Mixup does, so the tests seed that one.
# ruff: noqa: NPY002

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

import mixkit  # noqa: F401  (registers preact_resnet_tiny_cifar)
from mixkit.mix import align_mix_features, create_mixup, feature_points, flip_pair_plans
from mixkit.mix.alignmixup_ae import layer_geometry

NUM_CLASSES = 5


def _model(dtype: torch.dtype = torch.float32, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("preact_resnet_tiny_cifar", num_classes=NUM_CLASSES, base_width=4,
                             **kwargs).to(dtype).train()


def _batch(dtype: torch.dtype = torch.float32, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, 16, 16, generator=g, dtype=dtype), torch.randint(0, NUM_CLASSES, (batch,), generator=g)


def _grads(*modules: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for m in modules for p in m.parameters()]


def test_one_step_gradient_is_classification_plus_weighted_reconstruction():
    """fp64: the parameter gradients of a mixkit step equal those of the loss written out here: the clean
    stage-4 features, AlignMixup's mix of them (the OT plan of the flip pairs), the head, soft cross-entropy
    with lam-weighted smoothed targets, plus recon_weight x the mean squared error of the decoded clean
    features against the input."""
    model, (x, y) = _model(torch.float64), _batch(torch.float64)
    reference = copy.deepcopy(model)
    np.random.seed(3)
    mix = create_mixup("alignmixup_ae", model=model, num_classes=NUM_CLASSES, input_prob=0.0, recon_weight=0.7,
                       label_smoothing=0.1)
    decoder = copy.deepcopy(mix.decoder)
    xm, ym = mix(x, y)
    loss = SoftTargetCrossEntropy()(model(xm), ym) + mix.extra_loss()
    loss.backward()
    draw = mix.last_draw
    assert draw.branch == "feature" and draw.layer == "layer4"

    r = reference
    features = r.layer4(r.layer3(r.layer2(r.layer1(F.relu(r.bn1(r.conv1(x)))))))
    recon = ((decoder(features, size=(16, 16)) - x) ** 2).mean()
    lam = torch.from_numpy(draw.lam).double()
    plan = flip_pair_plans(feature_points(features))
    mixed = align_mix_features(features, features.flip(0), lam, direction=draw.direction, plan=plan)
    log_probs = torch.log_softmax(r.forward_head(mixed), dim=1)
    smooth = torch.full((len(y), NUM_CLASSES), 0.1 / NUM_CLASSES, dtype=torch.float64)
    smooth[torch.arange(len(y)), y] = 0.9 + 0.1 / NUM_CLASSES
    targets = lam[:, None] * smooth + (1 - lam[:, None]) * smooth.flip(0)
    total = -(targets * log_probs).sum(1).mean() + 0.7 * recon
    total.backward()
    # 1e-6, not exact: the soft targets are fp32 (timm's mixup_target), the written-out ones fp64.
    assert float(loss.detach()) == pytest.approx(float(total.detach()), abs=1e-6)
    for got, want in zip(_grads(model, mix.decoder), _grads(reference, decoder), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_decoded_images_never_reach_the_classifier_nor_the_mixing():
    model, (x, y) = _model(), _batch()
    np.random.seed(0)
    mix = create_mixup("alignmixup_ae", model=model, num_classes=NUM_CLASSES, input_prob=0.0)
    decoded, seen = [], []
    mix.decoder.register_forward_hook(lambda m, a, out: decoded.append(out))
    for module in model.modules():
        module.register_forward_pre_hook(lambda m, args: seen.extend(a for a in args if torch.is_tensor(a)))
    xm, _ = mix(x, y)
    logits = model(xm)
    assert len(decoded) == 1 and mix.extra_loss() is not None
    assert not any(t is decoded[0] or t.data_ptr() == decoded[0].data_ptr() for t in seen)
    # Neither the logits nor the mixed features depend on the decoder: no gradient path from them to it.
    grads = torch.autograd.grad(logits.sum(), list(mix.decoder.parameters()), allow_unused=True)
    assert all(g is None for g in grads)


def test_which_steps_train_the_decoder():
    """The feature branch and unmixed steps reconstruct the clean batch; the input branch (no clean features
    of this batch) leaves the decoder unused; evaluation and no-grad forwards never compute the loss; the
    loss is handed over once."""
    model, (x, y) = _model(), _batch()
    mix = create_mixup("alignmixup_ae", model=model, num_classes=NUM_CLASSES, input_prob=1.0)
    xm, ym = mix(x, y)
    model(xm).sum().backward()
    assert mix.last_draw.branch == "input" and mix.extra_loss() is None
    assert all(p.grad is None for p in mix.decoder.parameters())

    mix.mixup_enabled = False
    xm, _ = mix(x, y)
    assert torch.equal(xm, x)
    model.eval()
    model(xm)
    with torch.no_grad():
        model.train()
        model(xm)
    assert mix.extra_loss() is None  # neither forward trains the decoder, and the clean input is still pending
    model(xm)
    loss = mix.extra_loss()
    assert loss is not None and loss.requires_grad and mix.extra_loss() is None
    expected = mix.recon_weight * F.mse_loss(mix.decode(model.layer4(model.layer3(model.layer2(model.layer1(
        F.relu(model.bn1(model.conv1(x))))))), (16, 16)), x)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_detach_encoder_leaves_the_classifier_gradient_of_alignmixup():
    """With ``detach_encoder`` the model's gradients are AlignMixup's (same draw), and the decoder still trains."""
    plain_model, (x, y) = _model(torch.float64), _batch(torch.float64)
    ae_model = copy.deepcopy(plain_model)
    for name, model in (("alignmixup", plain_model), ("alignmixup_ae", ae_model)):
        np.random.seed(5)
        kwargs = {"detach_encoder": True} if name == "alignmixup_ae" else {}
        mix = create_mixup(name, model=model, num_classes=NUM_CLASSES, input_prob=0.0, **kwargs)
        xm, ym = mix(x, y)
        loss = SoftTargetCrossEntropy()(model(xm), ym)
        extra = mix.extra_loss()
        (loss if extra is None else loss + extra).backward()
    assert extra is not None and all(p.grad is not None for p in mix.decoder.parameters())
    for got, want in zip(_grads(ae_model), _grads(plain_model), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_the_decoder_matches_the_layer_and_the_input():
    model = _model(in_chans=1)
    mix = create_mixup("alignmixup_ae", model=model, num_classes=NUM_CLASSES)
    # layer4: 32 channels at reduction 8; half the widths of layer3, layer2, layer1 (16, 8, 4 channels).
    assert mix.in_chans == 1 and mix.decoder.channels == (8, 4, 2)
    out = mix.decode(torch.randn(2, 32, 4, 4), size=(28, 28))
    assert out.shape == (2, 1, 28, 28)
    wide = create_mixup("alignmixup_ae", model=_model(), num_classes=NUM_CLASSES, decoder_channels=(24, 12, 6))
    assert wide.decoder.channels == (24, 12, 6)


def test_layer_geometry_measured_without_feature_info_and_without_side_effects():
    model = _model()
    with_info = layer_geometry(model, "layer3", in_chans=3)
    del model.feature_info
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.layer1.eval()
    assert layer_geometry(model, "layer3", in_chans=3) == with_info == (16, 4)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics untouched
    assert model.training and not model.layer1.training and model.layer2.training  # modes as they were


def test_reconstruction_under_bf16_autocast_is_fp32():
    model, (x, y) = _model(), _batch()
    mix = create_mixup("alignmixup_ae", model=model, num_classes=NUM_CLASSES, input_prob=0.0)
    xm, _ = mix(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(xm)
        loss = mix.extra_loss()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"recon_weight": 0.0}, "recon_weight must be a finite number > 0"),
    ({"recon_weight": float("nan")}, "recon_weight must be a finite number > 0"),
    ({"layers": ["layer3", "layer4"]}, "decodes one layer"),
    ({"decoder_channels": (8, 8)}, "decoder_channels must give 3 positive widths"),
    ({"in_chans": 0}, "in_chans must be >= 1"),
])
def test_bad_arguments_name_the_fix_and_leave_the_model_unhooked(kwargs, match):
    model = _model()
    with pytest.raises(ValueError, match=match):
        create_mixup("alignmixup_ae", model=model, num_classes=NUM_CLASSES, **kwargs)
    assert not any(m._forward_hooks for m in model.modules())


def test_a_layer_that_is_not_a_feature_map_is_refused():
    model = _model()
    with pytest.raises(ValueError, match="decodes a \\(B, C, h, w\\) feature map"):
        create_mixup("alignmixup_ae", model=model, num_classes=NUM_CLASSES, layers="global_pool")
