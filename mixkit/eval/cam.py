"""Class activation maps (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016).

For a model whose head is a global average pool and a linear classifier, the logit of class c is the mean over
positions of ``CAM_c(h, w) = sum_k W[c, k] f_k(h, w)`` plus the bias, where ``f`` is the last feature stage.
``class_activation_maps`` takes ``f`` from timm's ``forward_features`` and ``W`` from ``get_classifier()``,
and checks that identity on every batch: a head that is anything else (max pooling, a norm or an MLP after
the pool, tokens instead of a feature map) is refused, not mapped wrongly.

For evaluation the maps are upsampled to the input with bicubic interpolation and scaled to [0, 1] per image
(min-max; a constant map becomes zeros), as in Choe et al.'s wsolevaluation (``cv2.INTER_CUBIC`` and
``normalize_scoremap``). The few lines are written here: pytorch-grad-cam computes CAMs through hooks and
gradients, and would not check the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CamOutput", "class_activation_maps", "classifier_of", "normalize_cams", "upsample_cams"]


class CamOutput(NamedTuple):
    """What ``class_activation_maps`` returns."""

    logits: torch.Tensor
    """(B, classes), from the model's own head."""
    cams: torch.Tensor
    """(B, h, w) float32, at the resolution of the last feature stage."""


def classifier_of(model: nn.Module) -> nn.Linear:
    """The linear classifier of a timm model (``get_classifier()``).

    Raises:
        ValueError: The model has no ``forward_features`` / ``forward_head`` / ``get_classifier``, or its
            classifier is not an ``nn.Linear``.
    """
    missing = [m for m in ("forward_features", "forward_head", "get_classifier") if not hasattr(model, m)]
    if missing:
        raise ValueError(f"{type(model).__name__} has no {', '.join(missing)}: CAM needs a timm model (its "
                         "last feature stage from forward_features and the weights of get_classifier())")
    head = model.get_classifier()
    if isinstance(head, Sequence) and not isinstance(head, nn.Module):
        head = head[0] if len(head) == 1 else head
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__}'s classifier is {type(head).__name__}, not a Linear layer: CAM "
                         "needs a global-average-pool + linear head (a CNN such as resnet or mixkit's "
                         "preact_resnet; not a model with a conv or MLP head, or with no classifier)")
    return head


def class_activation_maps(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, *,
                          mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                          check: bool = True) -> CamOutput:
    """Logits and the CAM of one class per image, at the resolution of the last feature stage.

    Args:
        model: timm model with a global-average-pool + linear head, in eval mode.
        x: Input batch (B, C, H, W); pixels in [0, 1] when ``mean``/``std`` are given, else normalised.
        classes: Class index per image (B,) whose map is returned (the true class for GT-known localization).
        mean: Normalisation mean applied to ``x`` first (None: ``x`` is already normalised).
        std: Normalisation std (with ``mean``).
        check: Verify that the head is average pool + linear: the logits must equal each CAM's mean plus
            the bias (relative tolerance 1e-3).

    Returns:
        ``CamOutput(logits, cams)``: cams (B, h, w) float32, ``cams[i] = sum_k W[classes[i], k] f_k``.

    Raises:
        ValueError: The model is not a timm model with that head (see ``classifier_of``), its features are
            not a (B, C, h, w) map with C = the classifier's inputs, or the check fails.
    """
    fc = classifier_of(model)
    if mean is not None:
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - m) / s
    with torch.no_grad():
        feats = model.forward_features(x)
        if feats.ndim != 4 or feats.shape[1] != fc.in_features:
            raise ValueError(f"{type(model).__name__}.forward_features gives shape {tuple(feats.shape)}, not a "
                             f"(B, {fc.in_features}, h, w) feature map: CAM needs a CNN whose last stage feeds a "
                             "global pool (vision transformers and channels-last stages are not supported)")
        logits = model.forward_head(feats)
        weight = fc.weight.float()
        feats = feats.float()
        if check:
            expected = feats.mean((2, 3)) @ weight.T
            if fc.bias is not None:
                expected = expected + fc.bias.float()
            tol = 1e-3 * max(1.0, float(expected.abs().max()))
            if logits.shape != expected.shape or not torch.allclose(logits.float(), expected, rtol=1e-3, atol=tol):
                raise ValueError(f"{type(model).__name__}'s head is not a global average pool followed by its "
                                 "Linear classifier (the logits differ from the classifier applied to the mean "
                                 "feature): CAM is defined for avg-pool + linear heads only (not max / avgmax "
                                 "pooling, a norm or MLP after the pool); for timm models pass global_pool='avg'")
        cams = torch.einsum("bkhw,bk->bhw", feats, weight[classes.to(weight.device)])
    return CamOutput(logits, cams)


def upsample_cams(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CAMs (B, h, w) resized to ``size`` (H, W) with bicubic interpolation (half-pixel centres)."""
    return F.interpolate(cams[:, None].float(), size=size, mode="bicubic", align_corners=False)[:, 0]


def normalize_cams(cams: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1] (min-max); a constant map, or one with NaN, becomes zeros."""
    flat = cams.flatten(1).float()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    bad = (span <= 0) | torch.isnan(flat).any(1, keepdim=True)
    out = torch.where(bad, torch.zeros_like(flat), (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny))
    return out.clamp_(0, 1).view_as(cams)
