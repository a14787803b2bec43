"""``summary.csv`` and ``summary.json`` of a run: one row per epoch, timm's columns, written atomically."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic

__all__ = ["read_summary", "summary_columns", "write_summary"]


def summary_columns(extra_loss: str | None = None) -> list[str]:
    """timm's summary columns, with the mixing method's extra loss term after ``train_loss`` when it has one."""
    return ["epoch", "train_loss", *([extra_loss] if extra_loss else []), "eval_loss", "eval_top1", "eval_top5", "lr"]


def read_summary(path: Path, before_epoch: int) -> list[dict[str, Any]]:
    """The rows of the epochs before ``before_epoch`` (a resumed run continues the file)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: (float(v) if k != "epoch" else int(v)) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    return [r for r in rows if r["epoch"] < before_epoch]


def write_summary(run_dir: Path, rows: list[dict[str, Any]], extra: dict[str, Any], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run_dir / "summary.csv", buf.getvalue())
    write_text_atomic(run_dir / "summary.json", json.dumps({**extra, "epochs": rows}, indent=1) + "\n")
