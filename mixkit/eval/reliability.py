"""Reliability diagram (Guo et al. 2017): accuracy against confidence per bin, written as a PNG."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import save_figure_atomic
from .metrics import CalibrationBins

__all__ = ["plot_reliability_diagram"]


def plot_reliability_diagram(bins: CalibrationBins, path: str | os.PathLike, *, title: str = "") -> Path:
    """Draws accuracy per confidence bin (bars), the gap to perfect calibration and the sample histogram.

    Args:
        bins: Calibration bins (``ClassificationMetrics.bins()`` or ``calibration_bins``).
        path: Output PNG, written atomically (800 x 800 pixels).
        title: Title line; the ECE is appended.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = bins.edges.numpy()
    left, width = edges[:-1], edges[1:] - edges[:-1]
    centre = left + width / 2
    counts, acc, conf = bins.counts.numpy(), bins.accuracy.numpy(), bins.confidence.numpy()
    filled = counts > 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), dpi=100, height_ratios=(3, 1), sharex=True)
    try:
        top.bar(left[filled], acc[filled], width=width[filled], align="edge", color="tab:blue",
                edgecolor="black", label="accuracy")
        # The gap: from each bin's accuracy to its mean confidence.
        top.bar(centre[filled], conf[filled] - acc[filled], bottom=acc[filled], width=width[filled] * 0.5,
                color="tab:red", alpha=0.45, edgecolor="tab:red", label="gap to mean confidence")
        top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
        top.set_title(f"{title + chr(10) if title else ''}ECE {100 * bins.ece():.2f}% "
                      f"({len(counts)} bins, {bins.num_samples} samples)", fontsize=10)
        top.legend(loc="upper left")
        share = counts / max(counts.sum(), 1)
        bottom.bar(left, share, width=width, align="edge", color="gray", edgecolor="black")
        bottom.set(xlabel="confidence (top-1 softmax probability)", ylabel="share of samples", yscale="log")
        fig.tight_layout()
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)
