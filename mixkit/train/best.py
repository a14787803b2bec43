"""The best checkpoint of a run, by timm's ``--eval-metric``: ``model_best.safetensors`` beside the last weights.

timm's CheckpointSaver keeps ``model_best.pth.tar``, the checkpoint of the epoch whose evaluation was best
(``top1``/``top5`` higher is better, ``loss`` lower, a tie is no improvement). mixkit keeps the weights that
epoch evaluated (the EMA's with ``--model-ema``, as its numbers are the EMA's) as ``model_best.safetensors``
with the metric in its metadata, and the record (metric, value, epoch) in ``TrainState`` and summary.json.
Every checkpoint holds a hard link to the best file of its time, so a resume from any checkpoint restores the
best it had (written here: timm's saver keeps no best per checkpoint, and Accelerate none at all).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["BEST_WEIGHTS_FILE", "EVAL_METRICS", "improves", "link_or_copy", "restore_best"]

BEST_WEIGHTS_FILE = "model_best.safetensors"
# Metric -> lower is better (timm's train.py: decreasing = eval_metric == 'loss').
EVAL_METRICS = {"top1": False, "top5": False, "loss": True}


def improves(metric: str, value: float | None, best: dict[str, Any] | None) -> bool:
    """Whether ``value`` of ``metric`` beats the ``best`` record (strictly, as timm's saver compares)."""
    if value is None:
        return False
    if best is None:
        return True
    return value < best["value"] if EVAL_METRICS[metric] else value > best["value"]


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes the file ``src`` (a hard link: no space; a copy where the file system has none)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def restore_best(ckpt: Path, run_dir: Path) -> bool:
    """Puts the checkpoint's best weights back as ``<run>/model_best.safetensors`` (atomically); False when the
    checkpoint holds none (a run without evaluation, or no best yet)."""
    from ..atomic import temp_file_beside

    src, dst = ckpt / BEST_WEIGHTS_FILE, run_dir / BEST_WEIGHTS_FILE
    if not src.is_file():
        return False
    if dst.exists() and os.path.samefile(src, dst):
        return True
    with temp_file_beside(dst) as tmp:
        tmp.unlink()
        link_or_copy(src, tmp)
        os.replace(tmp, dst)
    return True
