"""SaliencyMix (Uddin et al., "SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better
Regularization", ICLR 2021).

A CutMix patch placed where the source image is salient: the patch side is drawn as in CutMix (lam ~
Beta(mixup_alpha, mixup_alpha), sides ``int(H * sqrt(1 - lam))`` and ``int(W * sqrt(1 - lam))``), its centre
is the peak of the source image's saliency map, it is pasted into the target image at the same location,
and lam is corrected by the clipped patch area. The defaults are the authors' (afm-shahab-uddin/SaliencyMix,
CIFAR ``command.sh``: ``--beta 1 --salmix_prob 0.5``).

Two saliency sources:

* ``'gradient'`` (default): ``|d loss / d x|``, max over channels, from the clean batch's loss
  (``mixkit.mix.saliency.input_gradient``: a second forward/backward per step). It runs on the batch's
  device, and the patch is placed by a device-side mask, so a training step on GPU tensors never waits
  for the host (``last_draw`` copies the boxes to the host only when it is read).
* ``'opencv'``: the authors' OpenCV static fine-grained saliency (Montabone & Soto 2010,
  ``cv2.saliency.StaticSaliencyFineGrained``, from opencv-contrib), on the host: one device-to-host copy of
  the source image per step, and a host-to-device copy of the peak. mixkit does not write this saliency by
  hand: the authors' boxes depend on OpenCV's exact arithmetic (on float images too).

The draw (NumPy's global generator, timm's order): the mix decision and lam as timm's CutMix draws them,
then the pairing; ``resolve`` finds the peaks and the boxes, ``apply`` pastes. In 'batch' mode one box
holds for the batch, centred on the saliency peak of the first sample's source (the authors' code: the
saliency of ``images[rand_index[0]]``); in 'elem' mode every sample gets its own lam and a box centred on
its own source's peak; in 'pair' mode both members of a pair swap patches inside one box (their lam and
targets shared, as timm's pairs), centred on the peak of the first member's source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Draw, MixupBase
from .checks import check_choice
from .saliency import input_gradient
from .targets import Lam, pair_with, to_device

__all__ = ["SALIENCY_SOURCES", "SaliencyMix", "SaliencyMixDraw", "gradient_saliency", "opencv_saliency",
           "saliency_peaks", "peak_boxes"]

SALIENCY_SOURCES = ("gradient", "opencv")
MIN_SIDE = 2  # a 1-pixel side gives int(1 * sqrt(1 - lam)) = 0: a patch would never be pasted

NO_OPENCV_SALIENCY = (
    "saliency='opencv' needs OpenCV's contrib modules (cv2.saliency, the authors' StaticSaliencyFineGrained), "
    "which come with opencv-contrib-python or opencv-contrib-python-headless; the installed cv2 has none "
    "(ffcv's opencv-python is the plain build: install the contrib build in a separate environment, not over "
    "it). Or use saliency='gradient' (--mixup-kwargs saliency=gradient), mixkit's default"
)


@dataclass(frozen=True, eq=False)
class SaliencyMixDraw(Draw):
    """A SaliencyMix call: the timm-style draw, then (after ``resolve``) the boxes and corrected lam.

    ``lam`` holds the Beta draws until ``resolve`` and the area-corrected weights after it; ``boxes`` the
    (B, 4) boxes (y0, y1, x0, x1). While the call's values live on the batch's device they are in
    ``device_lam`` and ``device_boxes``; ``SaliencyMix.last_draw`` copies them to ``lam`` and ``boxes``.

    Attributes:
        device_lam: (B,) corrected lam on the batch's device (None once copied to the host).
        device_boxes: (B, 4) int64 boxes on the batch's device (None once copied to the host).
    """

    device_lam: torch.Tensor | None = None
    device_boxes: torch.Tensor | None = None


def gradient_saliency(grad: torch.Tensor) -> torch.Tensor:
    """The saliency of an input gradient: ``|grad|`` max over channels, (B, H, W)."""
    return grad.abs().amax(dim=1)


def opencv_saliency(images: torch.Tensor) -> np.ndarray:
    """OpenCV's static fine-grained saliency of each image, quantised to uint8 as the authors do.

    Args:
        images: (N, C, H, W) images, as the model gets them (the authors pass the normalised float image).

    Returns:
        (N, H, W) uint8 maps on the host.

    Raises:
        ImportError: cv2 has no ``saliency`` module (the message names the package).
    """
    cv2 = _cv2_saliency()
    maps = []
    for image in images.detach().float().cpu().numpy():
        detector = cv2.saliency.StaticSaliencyFineGrained_create()
        ok, saliency = detector.computeSaliency(np.ascontiguousarray(image.transpose(1, 2, 0)))
        if not ok:
            raise RuntimeError(f"OpenCV's StaticSaliencyFineGrained failed on an image of shape {image.shape}")
        maps.append((saliency * 255).astype(np.uint8))
    return np.stack(maps)


def _cv2_saliency() -> Any:
    try:
        import cv2
    except ImportError as err:
        raise ImportError(NO_OPENCV_SALIENCY) from err
    if not hasattr(cv2, "saliency"):
        raise ImportError(NO_OPENCV_SALIENCY)
    return cv2


def saliency_peaks(saliency: torch.Tensor) -> torch.Tensor:
    """(B, 2) int64 (row, col) of each map's maximum, the first in row-major order on ties (NumPy's argmax)."""
    width = saliency.shape[-1]
    flat = saliency.flatten(1).argmax(dim=1)
    return torch.stack([flat // width, flat % width], dim=1)


def peak_boxes(peaks: torch.Tensor, lam: np.ndarray, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix-sized boxes centred on ``peaks``, and lam corrected by their clipped area.

    The sides are the authors' (and timm's ``rand_bbox``): ``int(H * sqrt(1 - lam))``, the box spanning
    ``centre -/+ side // 2`` clipped to the image. The sides are computed on the host from the drawn lam
    (no wait on the device); only the centres are on the device.

    Args:
        peaks: (B, 2) int64 (row, col) centres, on the batch's device.
        lam: (B,) drawn lam (1: no box).
        height: Image height.
        width: Image width.

    Returns:
        ``(boxes, lam)``: (B, 4) int64 (y0, y1, x0, x1) and (B,) float32 ``1 - area / (H * W)``, on the peaks'
        device.
    """
    cut_rat = np.sqrt(1.0 - np.asarray(lam, dtype=np.float64))
    half = np.stack([(height * cut_rat).astype(np.int64) // 2, (width * cut_rat).astype(np.int64) // 2], axis=1)
    half = to_device(half, peaks.device)
    limits = torch.tensor([height, width], device=peaks.device)
    low = torch.minimum((peaks - half).clamp_min(0), limits)
    high = torch.minimum((peaks + half).clamp_min(0), limits)
    boxes = torch.stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1]], dim=1)
    area = (high - low).prod(dim=1)
    exact = torch.float32 if peaks.device.type == "mps" else torch.float64  # the authors' lam is a Python float
    corrected = (1.0 - area.to(exact) / (height * width)).float()
    return boxes, corrected


def paste_boxes(x: torch.Tensor, source: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``x`` with each sample's box (y0, y1, x0, x1) taken from ``source``, by a device-side mask."""
    rows = torch.arange(x.shape[-2], device=x.device).view(1, -1, 1)
    cols = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
    y0, y1, x0, x1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    return torch.where(inside.unsqueeze(1), source, x)


class SaliencyMix(MixupBase):
    """SaliencyMix: a CutMix patch centred on the source image's saliency peak (see the module docstring).

    Args:
        saliency: 'gradient' (the clean loss's input gradient; default: it stays on the device) or 'opencv'
            (the authors' OpenCV static fine-grained saliency, on the host; needs opencv-contrib).
        **kwargs: ``MixupBase``'s arguments. ``mixup_alpha`` (default 1.0) is the paper's beta: lam ~
            Beta(mixup_alpha, mixup_alpha) sets the patch size; ``prob`` defaults to the authors' 0.5
            (``--salmix_prob``). CutMix's own arguments are refused: the patch is SaliencyMix's.
    """

    method = "saliencymix"
    supports_cutmix = False
    needs_model = True  # with the default gradient saliency; saliency='opencv' does not need the model
    uses_model_gradient = True

    def __init__(self, *, saliency: str = "gradient", prob: float = 0.5, **kwargs: Any) -> None:
        check_choice("saliency", saliency, SALIENCY_SOURCES)
        if saliency == "opencv":
            _cv2_saliency()
            self.needs_model = False  # instance attributes: the model is only checked, not held
            self.uses_model_gradient = False
        super().__init__(prob=prob, **kwargs)
        self.saliency = saliency
        self._last_draw: Draw = Draw()

    @classmethod
    def check_cutmix(cls, cutmix_alpha: float, cutmix_minmax: Any) -> None:
        if cutmix_alpha or cutmix_minmax is not None:
            raise ValueError(
                "saliencymix draws its own patch: its size is lam ~ Beta(mixup_alpha, mixup_alpha) (the paper's "
                "beta, default 1.0), so CutMix's settings do not apply: set cutmix_alpha=0 and cutmix_minmax=None "
                "(on the command line: --cutmix 0 and no --cutmix-minmax) and give the beta as mixup_alpha "
                "(--mixup-kwargs mixup_alpha=...)"
            )

    # last_draw holds device tensors after a call; reading it copies them to the host (a sync), so the
    # training step itself never waits.
    @property
    def last_draw(self) -> Draw:
        draw = self._last_draw
        if isinstance(draw, SaliencyMixDraw) and draw.device_lam is not None:
            lam = draw.device_lam.cpu().numpy()
            draw = replace(draw, lam=float(lam[0]) if isinstance(draw.lam, float) else lam,
                           boxes=draw.device_boxes.cpu().numpy(), device_lam=None, device_boxes=None)
            self._last_draw = draw
        return draw

    @last_draw.setter
    def last_draw(self, draw: Draw) -> None:
        self._last_draw = draw

    def _check_size(self, x: torch.Tensor) -> None:
        height, width = x.shape[-2:]
        if min(height, width) < MIN_SIDE:
            raise ValueError(f"saliencymix: the images are {height} x {width} pixels; a patch side is "
                             f"int(side * sqrt(1 - lam)), 0 for a side under {MIN_SIDE}, so nothing would be "
                             f"pasted: use images of at least {MIN_SIDE} x {MIN_SIDE} pixels")

    def draw(self, x: torch.Tensor) -> Draw:
        self._check_size(x)
        batch_size = x.shape[0]
        if self.mode == "batch":
            lam, _ = self._draw_lam(None)
            if lam == 1.0:
                return Draw()
            return SaliencyMixDraw(lam=float(lam), partner=self._draw_partner(batch_size), branch="input",
                                   layer="input", cut=np.ones(batch_size, dtype=bool))
        pair = self.mode == "pair"
        lam, _ = self._draw_lam(batch_size // 2 if pair else batch_size)
        if pair:  # both members of a pair share lam; the middle of an odd batch is left alone
            lam = np.concatenate([lam, np.ones(batch_size % 2, dtype=np.float32), lam[::-1]])
        partner = self._draw_partner(batch_size)
        if np.all(lam == 1.0):
            return Draw(lam=lam)
        return SaliencyMixDraw(lam=lam, partner=partner, branch="input", layer="input", cut=lam != 1.0)

    def _source_saliency_peaks(self, x: torch.Tensor, target: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """(len(sources), 2) saliency peaks of the images ``x[sources]``, on x's device."""
        if self.saliency == "opencv":
            maps = torch.from_numpy(opencv_saliency(x.index_select(0, sources)))
            return to_device(saliency_peaks(maps).numpy(), x.device)
        loss_fn = F.binary_cross_entropy_with_logits if self.multi_label else None
        grad, _ = input_gradient(self.model, x, target.float() if self.multi_label else target, loss_fn=loss_fn)
        return saliency_peaks(gradient_saliency(grad.index_select(0, sources)))

    def resolve(self, x: torch.Tensor, target: torch.Tensor, draw: Draw) -> Draw:
        if not isinstance(draw, SaliencyMixDraw):
            return draw
        batch_size, (height, width) = x.shape[0], x.shape[-2:]
        partner = (torch.arange(batch_size - 1, -1, -1, device=x.device) if draw.partner is None
                   else to_device(draw.partner, x.device))
        if self.mode == "batch":  # the authors': one box, from the saliency of the first sample's source
            peaks = self._source_saliency_peaks(x, target, partner[:1]).expand(batch_size, 2)
        else:
            peaks = self._source_saliency_peaks(x, target, partner)
            if self.mode == "pair":  # the second member of a pair uses the first's box
                first = torch.arange(batch_size, device=x.device) < batch_size // 2
                peaks = torch.where(first.unsqueeze(1), peaks, peaks.flip(0))
        lam = np.full(batch_size, draw.lam) if isinstance(draw.lam, float) else draw.lam
        boxes, corrected = peak_boxes(peaks, lam, height, width)
        return replace(draw, device_lam=corrected, device_boxes=boxes)

    def device_weights(self, draw: Draw, x: torch.Tensor) -> tuple[Lam, torch.Tensor | None]:
        if not isinstance(draw, SaliencyMixDraw):
            return super().device_weights(draw, x)
        partner = None if draw.partner is None else to_device(draw.partner, x.device)
        return draw.device_lam, partner

    def apply(self, x: torch.Tensor, target: torch.Tensor, draw: Draw, lam: Lam,
              partner: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(draw, SaliencyMixDraw):
            return x
        return paste_boxes(x, pair_with(x, partner), draw.device_boxes)
