"""Manifold Mixup (Verma et al., ICML 2019): mixup of hidden features at a layer drawn per batch.

Functional core ``manifold_mix_features`` and the stateful ``ManifoldMixup`` (timm's Mixup call
contract). Paper: https://arxiv.org/abs/1806.05236
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Draw
from .feature_mix import FeatureMixupBase
from .hooks import MixFn, check_feature_output
from .layers import INPUT, feature_info_entries, unwrap_model
from .targets import lam_weights, pair_with

__all__ = ["ManifoldMixup", "default_manifold_layers", "manifold_mix_features"]


def manifold_mix_features(a: torch.Tensor, b: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Interpolates two batches of features: lam * a + (1 - lam) * b.

    Args:
        a: Features (B, ...).
        b: Partner features, same shape.
        lam: A float, or (B,) per-sample weights (cast to ``a``'s dtype so autocast keeps bf16/fp16).

    Returns:
        The mix, in ``a``'s dtype and shape.
    """
    if a.shape != b.shape:
        raise ValueError(f"features to mix must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    w = lam_weights(lam, a)
    return a * w + b * (1 - w)


def default_manifold_layers(model: nn.Module) -> tuple[str, ...]:
    """The input and the first two timm feature stages at stride >= 4.

    For ResNet that is (input, layer1, layer2): the paper's k in {0, 1, 2} for PreActResNet.

    Raises:
        ValueError: The model has no timm feature_info; pass ``layers`` explicitly.
    """
    stages = [e["module"] for e in feature_info_entries(model) if (e["reduction"] or 4) >= 4]
    if not stages:
        raise ValueError(
            f"{type(unwrap_model(model)).__name__} has no timm feature_info to take default manifold layers "
            f"from; pass layers=({INPUT!r}, '<module name>', ...)"
        )
    return (INPUT, *stages[:2])


class ManifoldMixup(FeatureMixupBase):
    """Manifold Mixup behind timm's Mixup interface.

    Each mixed batch draws a layer uniformly from ``layers``; ``"input"`` mixes the input batch, any
    other layer is armed and mixed by the next training forward. Targets are mixed with the same lam.
    timm's Mixup arguments, the pairing and the hook rules are ``FeatureMixupBase``'s.

    Its arguments are ``FeatureMixupBase``'s (``model``, ``layers``, timm's ``mixup_alpha``, default 2.0
    as in the paper's CIFAR runs, ``prob``, ``mode``, ...). ``layers`` may include ``"input"``; it
    defaults to the input and the first two feature stages at stride >= 4 (ResNet: input, layer1,
    layer2).
    """

    method = "manifold"

    def _default_layers(self, model: nn.Module) -> tuple[str, ...]:
        return default_manifold_layers(model)

    def _make_mix_fn(self, draw: Draw, lam: torch.Tensor, partner: torch.Tensor | None, batch_size: int) -> MixFn:
        layer = draw.layer

        def mix(output: torch.Tensor) -> torch.Tensor:
            output = check_feature_output(layer, output, batch_size, ndims=(2, 3, 4, 5))
            return manifold_mix_features(output, pair_with(output, partner), lam)

        return mix
