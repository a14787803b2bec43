"""mixkit.models: the CIFAR-stem PreAct ResNets, built through timm's factory."""

import pytest
import timm
import torch
from torch import nn

import mixkit  # noqa: F401  (registers the models)
from mixkit.mix.layers import default_feature_layer


def _count_blocks(model: nn.Module) -> list[int]:
    return [len(getattr(model, f"layer{i}")) for i in range(1, 5)]


@pytest.mark.parametrize("name, blocks, width", [
    ("preact_resnet18_cifar", [2, 2, 2, 2], 64),
    ("preact_resnet_tiny_cifar", [1, 1, 1, 1], 16),
])
def test_architecture(name, blocks, width):
    model = timm.create_model(name, num_classes=10, in_chans=3)
    assert name in timm.list_models("preact_resnet*")
    assert _count_blocks(model) == blocks
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)  # CIFAR stem, no max-pool
    assert [f["num_chs"] for f in model.feature_info] == [width, 2 * width, 4 * width, 8 * width]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_parameter_count_of_preactresnet18_matches_the_paper_model():
    # Counted by hand from the authors' layer list: stem conv 3*64*9 + BN 2*64; per stage of width w from
    # w_in: first block BN(w_in) + conv(w_in->w) + BN(w) + conv(w->w) [+ 1x1 shortcut], second block
    # BN(w) + 2 conv(w->w) + BN(w); classifier 512*10 + 10.
    def stage(w_in, w):
        conv = 9 * w * w
        first = 2 * w_in + 9 * w_in * w + 2 * w + conv + (w_in * w if w_in != w else 0)
        return first + 2 * w + conv + 2 * w + conv

    expected = 3 * 64 * 9 + 128 + stage(64, 64) + stage(64, 128) + stage(128, 256) + stage(256, 512) + 5130
    model = timm.create_model("preact_resnet18_cifar", num_classes=10)
    assert expected == 11_171_274
    assert sum(p.numel() for p in model.parameters()) == expected


def test_feature_reductions_match_the_shapes():
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=10, in_chans=1, base_width=8).eval()
    feats = timm.create_model("preact_resnet_tiny_cifar", features_only=True, in_chans=1, base_width=8)
    outs = feats(torch.randn(1, 1, 32, 32))
    assert [o.shape[-1] for o in outs] == [32 // f["reduction"] for f in model.feature_info]
    assert [o.shape[1] for o in outs] == [f["num_chs"] for f in model.feature_info]
    assert default_feature_layer(model) == "layer4"


def test_reset_classifier_and_pre_logits():
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=10).eval()
    model.reset_classifier(3)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize("kwargs, match", [
    ({"pretrained": True}, "no pretrained weights"),
    ({"layers": (1, 1, 1)}, "four positive block counts"),
    ({"base_width": 0}, "base_width"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model("preact_resnet_tiny_cifar", **kwargs)
