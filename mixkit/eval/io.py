"""Atomic output files: write to a temporary name in the target folder, then ``os.replace``.

A run killed mid-write leaves either the previous file or none, never half a JSON or PNG.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["save_figure_atomic", "write_json_atomic", "write_text_atomic"]


def _atomic(path: str | os.PathLike, write: Any, *, binary: bool) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically and returns the path."""
    return _atomic(path, lambda f: f.write(text), binary=False)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON to ``path`` atomically and returns the path."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_figure_atomic(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Saves a matplotlib figure as PNG to ``path`` atomically and returns the path."""
    return _atomic(path, lambda f: fig.savefig(f, format="png", **savefig_kwargs), binary=True)
