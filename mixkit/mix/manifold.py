"""Manifold Mixup (Verma et al., ICML 2019): mixup of hidden features at a layer drawn per batch.

Functional core ``manifold_mix_features`` and the stateful ``ManifoldMixup`` (timm's Mixup call
contract). Paper: https://arxiv.org/abs/1806.05236
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .feature_mix import FeatureMixupBase, lam_weights
from .hooks import MixFn, check_feature_output
from .layers import INPUT, LayerSpec, unwrap_model

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
    info = getattr(unwrap_model(model), "feature_info", None)
    if hasattr(info, "module_name"):  # features_only models carry a FeatureInfo object
        stages = [n for n, r in zip(info.module_name(), info.reduction(), strict=True) if r >= 4]
    else:
        try:
            stages = [str(e["module"]) for e in info if int(e.get("reduction", 4)) >= 4]
        except (TypeError, KeyError, AttributeError, ValueError):
            stages = []
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
    Pairing is timm's ``flip(0)``; an odd batch's middle sample stays unmixed.

    Args:
        model: The model (timm or any nn.Module; DDP / Accelerate / compile wrappers are looked through).
        layers: Layer set: module names, timm feature_info indices, or "input". Default: the input and
            the first two feature stages at stride >= 4 (ResNet: input, layer1, layer2).
        mixup_alpha: lam ~ Beta(mixup_alpha, mixup_alpha); 2.0 as in the paper's CIFAR runs.
        prob: Probability of mixing a batch (or element in 'pair' / 'elem' mode).
        mode: 'batch', 'pair' or 'elem' (timm's modes).
        label_smoothing: Label smoothing of the soft targets.
        num_classes: Number of classes.
        multi_label: Dense (B, num_classes) multi-label targets.
        cutmix_alpha: timm's argument; must be 0.
        cutmix_minmax: timm's argument; must be None.
        switch_prob: timm's argument; unused.
        correct_lam: timm's argument; unused.
    """

    method = "manifold"

    def __init__(
        self,
        *,
        model: nn.Module,
        layers: LayerSpec | Sequence[LayerSpec] | None = None,
        mixup_alpha: float = 2.0,
        prob: float = 1.0,
        mode: str = "batch",
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        multi_label: bool = False,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        switch_prob: float = 0.5,
        correct_lam: bool = True,
    ) -> None:
        if model is None:
            raise ValueError("manifold mixes hidden features and needs the model: pass model=model")
        super().__init__(
            model=model,
            layers=default_manifold_layers(model) if layers is None else layers,
            mixup_alpha=mixup_alpha,
            prob=prob,
            mode=mode,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
            multi_label=multi_label,
            cutmix_alpha=cutmix_alpha,
            cutmix_minmax=cutmix_minmax,
            switch_prob=switch_prob,
            correct_lam=correct_lam,
        )

    def _make_mix_fn(self, layer: str, lam: torch.Tensor, batch_size: int) -> MixFn:
        def mix(output: torch.Tensor) -> torch.Tensor:
            output = check_feature_output(layer, output, batch_size, ndims=(2, 3, 4, 5))
            return manifold_mix_features(output, output.flip(0), lam)

        return mix
