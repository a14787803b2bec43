"""PreAct ResNets with a CIFAR-style stem, registered with timm (``timm.create_model`` finds them).

AlignMixup's CIFAR and Tiny-ImageNet results use PreActResNet-18 with a 3x3 stem and no max-pool
(He et al., "Identity Mappings in Deep Residual Networks", 2016). timm has no such model, so it is
written here as a small timm model: ``feature_info``, ``forward_features``/``forward_head``,
``reset_classifier`` and a ``pretrained_cfg``, so timm's factories, mixkit's layer resolution and
``resolve_data_config`` treat it like any timm model.

- ``preact_resnet18_cifar``: blocks [2, 2, 2, 2], widths 64-512 (the authors' model).
- ``preact_resnet_tiny_cifar``: blocks [1, 1, 1, 1], widths 16-128: the demo and the accuracy study.

Both take ``base_width`` and ``layers`` to scale them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["PreActBlock", "PreActResNet"]

# Per-channel statistics of CIFAR-10's training set, the usual normalisation for CIFAR recipes.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity (or 1x1 conv) shortcut."""

    def __init__(self, in_chs: int, out_chs: int, *, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The pre-activated input feeds the projection shortcut, as in the paper's full pre-activation.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """PreAct ResNet with a CIFAR stem (3x3 conv-BN-ReLU, stride 1, no max-pool) and four stages.

    As in the AlignMixup authors' CIFAR model, the last stage's output goes straight to the pooling
    (no final BN-ReLU), and that output is the layer AlignMixup mixes.

    Args:
        layers: Blocks per stage.
        base_width: Channels of the first stage; each later stage doubles them.
        num_classes: Classifier outputs (0: no classifier, ``forward`` returns pooled features).
        in_chans: Input channels.
        global_pool: timm's pooling type for the head.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Must be 0 (no stochastic depth here); timm's flag reaches the model and is refused.
        drop_block_rate: Must be 0 (no DropBlock here), likewise.
    """

    def __init__(self, *, layers: Sequence[int] = (2, 2, 2, 2), base_width: int = 64, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, drop_block_rate: float = 0.0) -> None:
        super().__init__()
        if drop_path_rate or drop_block_rate:
            raise ValueError(f"PreActResNet has no drop-path or DropBlock layers (got drop_path_rate={drop_path_rate}, "
                             f"drop_block_rate={drop_block_rate}): drop --drop-path/--drop-block, or use a timm "
                             "model that has them (e.g. resnet18)")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        if int(base_width) < 1:
            raise ValueError(f"base_width must be a positive number of channels, got {base_width}")
        self.num_classes = num_classes
        self.in_chans = in_chans  # timm's attribute: its exports (config.json) read the input channels from it
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, base_width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.feature_info = []
        in_chs, reduction = base_width, 1
        for i, blocks in enumerate(layers):
            out_chs, stride = base_width * 2 ** i, 1 if i == 0 else 2
            reduction *= stride
            stage = [PreActBlock(in_chs, out_chs, stride=stride)]
            stage += [PreActBlock(out_chs, out_chs) for _ in range(int(blocks) - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            self.feature_info.append({"num_chs": out_chs, "reduction": reduction, "module": f"layer{i + 1}"})
            in_chs = out_chs
        self.num_features = self.head_hidden_size = in_chs
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (4, 4), "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": CIFAR_MEAN, "std": CIFAR_STD, "first_conv": "conv1",
        "classifier": "fc", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "preact_resnet18_cifar.untrained": _cfg(),
    "preact_resnet_tiny_cifar.untrained": _cfg(),
})


def _has_weights_source(kwargs: dict) -> bool:
    # timm's pretrained=True with a source of weights: a mixkit-train export read through "local-dir:<run>"
    # (its config.json gives pretrained_cfg) or pretrained_cfg_overlay=dict(file=...).
    sources = ("file", "state_dict", "url", "hf_hub_id")
    cfgs = [kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")]
    return any(isinstance(c, dict) and any(c.get(k) for k in sources) for c in cfgs)


def _create(variant: str, pretrained: bool, **kwargs) -> PreActResNet:
    if pretrained and not _has_weights_source(kwargs):
        raise ValueError(f"{variant} has no pretrained weights: train it (mixkit-train) and load the run's "
                         "model.safetensors with --initial-checkpoint / mixkit.rundir.create_model_from_run")
    return build_model_with_cfg(PreActResNet, variant, pretrained,
                                feature_cfg={"out_indices": (0, 1, 2, 3)}, **kwargs)


@register_model
def preact_resnet18_cifar(pretrained: bool = False, **kwargs) -> PreActResNet:
    """PreActResNet-18, CIFAR stem: the authors' CIFAR-10/100 model."""
    return _create("preact_resnet18_cifar", pretrained, **{"layers": (2, 2, 2, 2), "base_width": 64, **kwargs})


@register_model
def preact_resnet_tiny_cifar(pretrained: bool = False, **kwargs) -> PreActResNet:
    """One block per stage, widths 16-128: small enough to train on two CPU cores in minutes."""
    return _create("preact_resnet_tiny_cifar", pretrained, **{"layers": (1, 1, 1, 1), "base_width": 16, **kwargs})
