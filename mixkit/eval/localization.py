"""Weakly supervised object localization metrics from CAMs, following Choe et al. (CVPR 2020).

"Evaluating Weakly Supervised Object Localization Methods Right" (Choe, Oh, Lee, Chun, Akata, Shim;
code: clovaai/wsolevaluation). For every image the CAM of its true class is upsampled to the input and scaled
to [0, 1]; for every threshold ``tau`` of a sweep (0, 0.01, ..., 0.99 by default) the box is the bounding box of
the largest 8-connected component of ``cam >= tau`` (``scipy.ndimage.label``). Then, on the test images:

- **GT-known localization** at ``tau``: share of images whose box has IoU >= 0.5 with a true box;
- **top-1 localization** at ``tau``: the same and the top-1 class correct;
- **MaxBoxAcc**: the best GT-known localization over the sweep (the paper's threshold-free measure);
- **MaxBoxAccV2** (their recommended revision): the mean over IoU 0.3, 0.5, 0.7 of the best accuracy, where an
  image counts when the box of any component (not only the largest) reaches the IoU;
- the **chosen threshold**: the one maximising GT-known localization on held-out images (the first few of
  each class, never scored), and top-1 / GT-known localization at it, as the paper asks for operating points.

The sweep, the boxes and the counting are written here (scipy does the labelling, torchvision the IoU):
wsolevaluation itself is a research script with OpenCV contours and no package.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .boxes import box_iou
from .cam import class_activation_maps, normalize_cams, upsample_cams

__all__ = ["DEFAULT_CAM_INTERVAL", "IOU_THRESHOLD", "V2_IOU_THRESHOLDS", "FigureSample", "LocalizationMetrics",
           "LocalizationResult", "boxes_from_cam", "cam_thresholds", "localize"]

DEFAULT_CAM_INTERVAL = 0.01
"""Step of the CAM threshold sweep (wsolevaluation's default is 0.001: ten times the boxes, the same curve to
within its resolution)."""
IOU_THRESHOLD = 0.5
V2_IOU_THRESHOLDS = (0.3, 0.5, 0.7)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def cam_thresholds(interval: float = DEFAULT_CAM_INTERVAL) -> np.ndarray:
    """The sweep ``0, interval, 2 * interval, ...`` below 1.

    Raises:
        ValueError: ``interval`` not in (0, 0.5].
    """
    if not 0 < interval <= 0.5:
        raise ValueError(f"the CAM threshold interval must be in (0, 0.5], got {interval}")
    n = int(np.floor(1 / interval - 1e-9)) + 1
    return np.round(np.arange(n) * interval, 10)


def boxes_from_cam(cam: np.ndarray, thresholds: Sequence[float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Boxes of a [0, 1] map at each threshold.

    Args:
        cam: (H, W) map.
        thresholds: Thresholds; the mask at ``tau`` is ``cam >= tau``.

    Returns:
        (largest, every): largest (T, 4) is the bounding box ``x0, y0, x1, y1`` (pixel edges, x1 exclusive) of the
        largest 8-connected component at each threshold (all zeros when the mask is empty; ties go to the
        component met first in raster order); every[t] (K_t, 4) holds the box of each component.
    """
    from scipy import ndimage

    cam = np.asarray(cam)
    if cam.ndim != 2:
        raise ValueError(f"a CAM is one (H, W) map, got shape {cam.shape}")
    largest = np.zeros((len(thresholds), 4), dtype=np.float64)
    every: list[np.ndarray] = []
    for t, tau in enumerate(thresholds):
        labels, n = ndimage.label(cam >= tau, structure=_EIGHT_CONNECTED)
        if n == 0:
            every.append(np.zeros((1, 4)))
            continue
        boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)],
                         dtype=np.float64)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        largest[t] = boxes[int(np.argmax(sizes))]
        every.append(boxes)
    return largest, every


@dataclass
class FigureSample:
    """One test image kept for the figure: pixels, normalised CAM, true boxes, classes and the swept boxes."""

    image: torch.Tensor
    cam: torch.Tensor
    gt_boxes: torch.Tensor
    label: int
    pred: int
    boxes: np.ndarray
    ious: np.ndarray


class LocalizationMetrics:
    """Accumulates, per image, the IoU of the boxes at every threshold; ``compute`` gives the metrics.

    Args:
        thresholds: The CAM threshold sweep (``cam_thresholds``).
    """

    def __init__(self, thresholds: Sequence[float]) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self._largest: list[np.ndarray] = []
        self._any: list[np.ndarray] = []
        self._correct: list[bool] = []
        self._heldout: list[bool] = []

    def update(self, cam: np.ndarray, gt_boxes: torch.Tensor, *, correct: bool,
               heldout: bool) -> tuple[np.ndarray, np.ndarray]:
        """Adds one image: its [0, 1] CAM (H, W), true boxes (K >= 1, 4), whether its class is right, and whether
        it is held out.

        Returns:
            The (T, 4) largest-component boxes at each threshold and their (T,) IoU with the closest true box.
        """
        if len(gt_boxes) == 0:
            raise ValueError("an image without a true box cannot be scored: leave it out")
        largest, every = boxes_from_cam(cam, self.thresholds)
        gt = gt_boxes.numpy() if isinstance(gt_boxes, torch.Tensor) else np.asarray(gt_boxes)
        self._largest.append(box_iou(largest, gt).max(1))
        ious = box_iou(np.concatenate(every), gt).max(1)
        sizes = np.cumsum([0] + [len(b) for b in every])
        self._any.append(np.maximum.reduceat(ious, sizes[:-1]))
        self._correct.append(bool(correct))
        self._heldout.append(bool(heldout))
        return largest, self._largest[-1]

    def __len__(self) -> int:
        return len(self._correct)

    def ious(self) -> tuple[np.ndarray, np.ndarray]:
        """(largest, any): (N, T) IoU of the largest component's box / best component box at each threshold."""
        t = len(self.thresholds)
        if not self._largest:
            return np.zeros((0, t)), np.zeros((0, t))
        return np.stack(self._largest), np.stack(self._any)

    def compute(self) -> dict:
        """The metrics (percent) on the test images and the threshold chosen on the held-out ones.

        Raises:
            ValueError: No test image (all were held out, or none was added).
        """
        largest, any_box = self.ious()
        correct, heldout = np.array(self._correct, dtype=bool), np.array(self._heldout, dtype=bool)
        test = ~heldout
        if not test.any():
            raise ValueError(f"no test image to score ({len(correct)} image(s), all held out for the threshold "
                             "choice): lower --loc-holdout or evaluate more images")
        hit = largest >= IOU_THRESHOLD
        gt_known = 100.0 * hit[test].mean(0)
        top1_loc = 100.0 * (hit & correct[:, None])[test].mean(0)
        best = int(np.argmax(gt_known))
        per_iou = {f"{round(100 * d)}": float(100.0 * (any_box[test] >= d).mean(0).max()) for d in V2_IOU_THRESHOLDS}
        if heldout.any():
            chosen, chosen_on = int(np.argmax(hit[heldout].mean(0))), "held-out"
        else:
            chosen, chosen_on = best, "test (no held-out images: optimistic)"
        tau = self.thresholds
        return {
            "num_test": int(test.sum()), "num_heldout": int(heldout.sum()), "iou_threshold": IOU_THRESHOLD,
            "top1": float(100.0 * correct[test].mean()),
            "max_box_acc": float(gt_known[best]), "best_threshold": float(tau[best]),
            "top1_loc_at_best": float(top1_loc[best]),
            "chosen_threshold": float(tau[chosen]), "threshold_chosen_on": chosen_on,
            "gt_known_loc": float(gt_known[chosen]), "top1_loc": float(top1_loc[chosen]),
            "heldout_gt_known_loc": float(100.0 * hit[heldout][:, chosen].mean()) if heldout.any() else None,
            "max_box_acc_v2": float(np.mean(list(per_iou.values()))), "max_box_acc_v2_per_iou": per_iou,
            "cam_thresholds": [float(v) for v in tau],
            "gt_known_per_threshold": [float(v) for v in gt_known],
            "top1_loc_per_threshold": [float(v) for v in top1_loc],
        }


@dataclass
class LocalizationResult:
    """What ``localize`` measured: the metrics, images left out, and a few test images for the figure."""

    metrics: dict
    skipped_no_box: int
    samples: list[FigureSample] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.metrics, "skipped_no_box_in_crop": self.skipped_no_box}


def localize(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    holdout_per_class: int,
    interval: float = DEFAULT_CAM_INTERVAL,
    device: str | torch.device = "cpu",
    figure_samples: int = 8,
    progress: bool = False,
    total: int | None = None,
) -> LocalizationResult:
    """One pass: logits and the true class's CAM per image, its boxes over the sweep, the metrics.

    Args:
        model: timm model with a global-average-pool + linear head (see ``mixkit.eval.cam``).
        batches: (pixels in [0, 1] (B, C, H, W), classes (B,), true boxes per image in input pixels) batches.
        mean: Normalisation mean the model was trained with.
        std: Normalisation std.
        holdout_per_class: The first this many images of each class choose the threshold and are not scored.
        interval: Step of the threshold sweep.
        device: Where the model runs.
        figure_samples: Test images kept for the figure.
        progress: Show a progress bar.
        total: Number of batches (progress bar).

    Raises:
        ValueError: The model's head is not avg-pool + linear, bad settings, or no test image.
    """
    from tqdm.auto import tqdm

    if holdout_per_class < 0:
        raise ValueError(f"the held-out images per class must be >= 0, got {holdout_per_class}")
    device = torch.device(device)
    model.eval()
    metrics = LocalizationMetrics(cam_thresholds(interval))
    seen: dict[int, int] = {}
    skipped = 0
    samples: list[FigureSample] = []
    for x, y, gt_boxes in tqdm(batches, total=total, desc="localization", unit="batch", disable=not progress,
                               leave=False):
        x, y = x.to(device), y.to(device)
        logits, cams = class_activation_maps(model, x, y, mean=mean, std=std)
        maps = normalize_cams(upsample_cams(cams, tuple(x.shape[-2:]))).cpu()
        pred = logits.argmax(1).cpu()
        for i, label in enumerate(y.cpu().tolist()):
            if len(gt_boxes[i]) == 0:
                skipped += 1
                continue
            heldout = seen.get(label, 0) < holdout_per_class
            seen[label] = seen.get(label, 0) + 1
            boxes, ious = metrics.update(maps[i].numpy(), gt_boxes[i], correct=bool(pred[i] == label),
                                         heldout=heldout)
            if not heldout and len(samples) < figure_samples:
                samples.append(FigureSample(x[i].cpu(), maps[i], gt_boxes[i].cpu(), label, int(pred[i]), boxes,
                                            ious))
    return LocalizationResult(metrics.compute(), skipped, samples)
