"""The localization picture: a few test images with their CAM, the predicted box and the true boxes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import save_figure_atomic
from .localization import FigureSample

__all__ = ["plot_localization"]


def plot_localization(samples: Sequence[FigureSample], threshold_index: int, thresholds: Sequence[float],
                      path: str | os.PathLike, *, classes: Sequence[str] | None = None, title: str = "") -> Path:
    """Draws each sample twice: the image, and its CAM over the image; both with the true boxes (green) and the
    box at the chosen threshold (red), and the classes and IoU above.

    Args:
        samples: Images kept by ``localize``.
        threshold_index: Position of the chosen threshold in the sweep.
        thresholds: The sweep.
        path: Output PNG, written atomically (about 200 px per image column, 450 px high).
        classes: Class names for the labels (None: indices).
        title: Title line.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not samples:
        raise ValueError("no test image to draw")

    def name(k: int) -> str:
        return classes[k] if classes is not None and k < len(classes) else str(k)

    n = len(samples)
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.5), dpi=100, squeeze=False)
    try:
        for j, s in enumerate(samples):
            img = s.image.permute(1, 2, 0).numpy()
            img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
            box = s.boxes[threshold_index]
            for row, ax in enumerate(axes[:, j]):
                ax.imshow(img, interpolation="nearest")
                if row == 1:
                    ax.imshow(s.cam.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
                for g in s.gt_boxes.tolist():
                    ax.add_patch(Rectangle((g[0] - 0.5, g[1] - 0.5), g[2] - g[0], g[3] - g[1], fill=False,
                                           edgecolor="lime", linewidth=1.5))
                ax.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1], fill=False,
                                       edgecolor="red", linewidth=1.5, linestyle="--"))
                ax.set_xticks([])
                ax.set_yticks([])
            ok = "ok" if s.pred == s.label else "wrong"
            axes[0, j].set_title(f"{name(s.label)[:14]}\npred {name(s.pred)[:12]} ({ok})", fontsize=7)
            axes[1, j].set_xlabel(f"IoU {s.ious[threshold_index]:.2f}", fontsize=7)
        axes[0, 0].set_ylabel("image", fontsize=8)
        axes[1, 0].set_ylabel("CAM (true class)", fontsize=8)
        fig.suptitle(f"{title + chr(10) if title else ''}green: true boxes, red: largest CAM component at "
                     f"threshold {thresholds[threshold_index]:.2f}", fontsize=8)
        fig.tight_layout()
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)
