"""The OOD picture: histograms of the in-distribution and the OOD images' scores, one panel per score."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..atomic import save_figure_atomic

__all__ = ["plot_ood_histograms"]


def plot_ood_histograms(id_scores: Mapping[str, torch.Tensor], ood_scores: Mapping[str, torch.Tensor],
                        metrics: Mapping[str, Mapping[str, float]], path: str | os.PathLike, *, id_name: str = "",
                        ood_name: str = "", title: str = "") -> Path:
    """Draws, per score, the share of ID (blue) and OOD (orange) images per score bin (40 equal bins over both
    sets' range) and the threshold that accepts 95% of the ID images (dashed: OOD images right of it are the
    FPR95); AUROC and FPR95 above each panel.

    Args:
        id_scores: {score name: (N,) in-distribution scores}.
        ood_scores: {score name: (M,) OOD scores}, the same names.
        metrics: {score name: ``ood_metrics``}.
        path: Output PNG, written atomically (450 px wide per score, 400 px high).
        id_name: Legend of the ID histogram.
        ood_name: Legend of the OOD histogram (and the title's second line).
        title: First title line.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    if not names:
        raise ValueError("no OOD score to draw")
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), dpi=100, squeeze=False)
    try:
        for ax, name in zip(axes[0], names, strict=True):
            a, b = id_scores[name].double().numpy(), ood_scores[name].double().numpy()
            lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
            edges = np.linspace(lo, hi if hi > lo else lo + 1, 41)
            ax.hist(a, bins=edges, weights=np.full(len(a), 1 / len(a)), color="tab:blue", alpha=0.6,
                    label=f"in-distribution ({len(a)})")
            ax.hist(b, bins=edges, weights=np.full(len(b), 1 / len(b)), color="tab:orange", alpha=0.6,
                    label=f"OOD ({len(b)})")
            # The 5% quantile of the ID scores: the threshold at 95% TPR (ID positive).
            ax.axvline(float(np.quantile(a, 0.05)), color="black", linestyle="--", linewidth=1,
                       label="threshold at 95% TPR")
            m = metrics[name]
            ax.set_title(f"{name}: AUROC {100 * m['auroc']:.1f}%, FPR95 {100 * m['fpr95']:.1f}%", fontsize=9)
            ax.set_xlabel(f"{name} score (higher: more in-distribution)", loc="left")
            ax.set_ylabel("share of images")
            ax.legend(fontsize=7, loc="upper left")
        lines = [t for t in (title, f"ID: {id_name[:70]}" if id_name else "", f"OOD: {ood_name[:70]}"
                             if ood_name else "") if t]
        if lines:
            fig.suptitle("\n".join(lines), fontsize=8)
        fig.tight_layout()
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)
