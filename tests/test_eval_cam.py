"""Class activation maps against their definition, computed independently from the model's weights."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import mixkit  # noqa: F401  (registers preact_resnet_tiny_cifar)
from mixkit.eval.cam import class_activation_maps, normalize_cams, upsample_cams


def _last_stage(model: nn.Module, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The output of the last stage, captured by a hook during the model's own forward (not forward_features).
    seen = []
    handle = stage.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("name, kwargs, stage", [("resnet18", {}, "layer4"),
                                                 ("preact_resnet_tiny_cifar", {"base_width": 4}, "layer4")])
def test_cam_is_the_classifier_weighted_sum_of_the_last_stage(name, kwargs, stage):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, **kwargs).eval()
    x = torch.randn(3, 3, 32, 32)
    y = torch.tensor([4, 0, 2])
    logits, cams = class_activation_maps(model, x, y)
    f = _last_stage(model, getattr(model, stage), x)
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    # Re-statement: CAM_c(h, w) = sum_k W[c, k] f_k(h, w), one explicit loop over the channels.
    expected = torch.zeros(3, *f.shape[-2:])
    for i in range(3):
        for k in range(f.shape[1]):
            expected[i] += w[y[i], k] * f[i, k]
    torch.testing.assert_close(cams, expected, rtol=1e-4, atol=1e-5)
    # Zhou et al.'s identity: the logit of class c is the mean of its CAM plus the bias.
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(logits, out)
    torch.testing.assert_close(cams.mean((1, 2)) + b[y], out[torch.arange(3), y], rtol=1e-4, atol=1e-4)


def test_pixels_are_normalised_first():
    torch.manual_seed(0)
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=3, in_chans=1, base_width=4).eval()
    x = torch.rand(2, 1, 16, 16)
    y = torch.tensor([1, 2])
    _, from_pixels = class_activation_maps(model, x, y, mean=[0.3], std=[0.2])
    _, from_normalised = class_activation_maps(model, (x - 0.3) / 0.2, y)
    torch.testing.assert_close(from_pixels, from_normalised)


class _NoTimm(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def _vit():
    return timm.create_model("vit_tiny_patch16_224", img_size=64, patch_size=16, num_classes=4)


@pytest.mark.parametrize("make, match", [
    (lambda: timm.create_model("resnet18", num_classes=4, global_pool="max"), "not a global average pool"),
    (lambda: timm.create_model("convnext_atto", num_classes=4), "not a global average pool"),  # norm after pool
    (_vit, "not a \\(B, 192, h, w\\) feature map"),
    (lambda: timm.create_model("resnet18", num_classes=0), "classifier is Identity, not a Linear"),
    (_NoTimm, "has no forward_features"),
])
def test_models_without_an_avg_pool_linear_head_are_refused(make, match):
    torch.manual_seed(0)
    model = make().eval()
    with pytest.raises(ValueError, match=match):
        class_activation_maps(model, torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))


def test_upsample_and_normalise():
    cams = torch.tensor([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]]])
    norm = normalize_cams(cams)
    torch.testing.assert_close(norm[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert (norm[1] == 0).all()  # a constant map carries no location: zeros, as wsolevaluation does
    nan = normalize_cams(torch.tensor([[[float("nan"), 1.0]]]))
    assert (nan == 0).all()
    up = upsample_cams(cams, (6, 6))
    assert up.shape == (2, 6, 6)
    torch.testing.assert_close(up[1], torch.full((6, 6), 3.0))  # bicubic keeps a constant
