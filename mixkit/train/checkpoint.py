"""Atomic, exactly resumable checkpoints on top of ``Accelerator.save_state``.

A checkpoint is ``<run>/checkpoints/epoch<E>-batch<B>/``, named by the position training continues from
(epoch E, batch B of it). It holds what ``save_state`` writes (model, optimizer, grad scaler, and the
registered timm scheduler and EMA) plus, per rank, ``train_state_<rank>.pt``: the position, the update
count, the partial epoch loss and every RNG state (Python, NumPy, torch, CUDA) both at the epoch start
(to replay the loader's shuffle and worker seeds) and now. mixkit writes the RNG states itself because
Accelerate logs and ignores a failed RNG restore; ours are loaded with ``weights_only=True`` and a failure
is an error. A marker file written last, then a rename from a temporary directory, makes the save atomic:
a kill during a save leaves the previous checkpoints untouched and no half-written one under a real name.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "CheckpointManager", "find_checkpoint", "get_rng_state", "list_checkpoints",
           "set_rng_state"]

MARKER = "mixkit_checkpoint.json"
_NAME = re.compile(r"^epoch(\d+)-batch(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint to resume from is missing, incomplete or unreadable."""


def checkpoint_name(epoch: int, batch: int) -> str:
    return f"epoch{epoch:04d}-batch{batch:06d}"


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state of this process, as tensors and plain numbers (loadable with weights_only)."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global generator timm uses)
    state = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what ``get_rng_state`` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],  # noqa: NPY002
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        if not torch.cuda.is_available():
            raise CheckpointError("the checkpoint holds CUDA RNG states but CUDA is not available here: resume "
                                  "on a machine with the same devices for an exact continuation")
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if _NAME.match(p.name) and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: tuple(int(g) for g in _NAME.match(p.name).groups()))


def find_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(checkpoint dir, run dir)`` for ``--resume``: a run directory (its latest checkpoint) or one checkpoint.

    Raises:
        CheckpointError: Nothing to resume from; the message says what was looked for.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"--resume {path}: no such file or directory; pass a run directory "
                              "(<output>/<experiment>) or a checkpoint under its checkpoints/ folder")
    if (path / MARKER).is_file():
        return path, path.parent.parent
    if _NAME.match(path.name):
        raise CheckpointError(f"--resume {path}: incomplete checkpoint (no {MARKER}; a save was interrupted): "
                              f"resume from its run directory {path.parent.parent} to take the latest complete one")
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"--resume {path}: no complete checkpoint under {path / 'checkpoints'}; pass a "
                              "mixkit-train run directory or one of its checkpoint folders")
    return found[-1], path


class CheckpointManager:
    """Saves and loads checkpoints of one run on every rank (the directory must be shared by all ranks).

    Args:
        run_dir: The run directory.
        accelerator: The run's Accelerator (its registered objects are saved with the state).
        keep: Newest checkpoints kept (``--checkpoint-hist``).
    """

    def __init__(self, run_dir: str | os.PathLike, accelerator, *, keep: int = 10) -> None:
        if keep < 1:
            raise ValueError(f"--checkpoint-hist must be >= 1, got {keep}")
        self.dir = Path(run_dir) / "checkpoints"
        self.accelerator = accelerator
        self.keep = keep

    def save(self, *, epoch: int, batch: int, train_state: dict[str, Any], meta: dict[str, Any],
             files: Mapping[str, Path] | None = None) -> Path:
        """Writes the checkpoint that continues at (epoch, batch); every rank calls this.

        ``files``: run files the checkpoint keeps as they are now (name in the checkpoint -> file; hard-linked
        by the main process: the best weights of the time, which a later epoch may replace in the run).
        """
        acc = self.accelerator
        name = checkpoint_name(epoch, batch)
        final, tmp = self.dir / name, self.dir / f".tmp-{name}"
        if acc.is_main_process:
            self.dir.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        torch.save(train_state, tmp / f"train_state_{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            from .best import link_or_copy

            for name, src in (files or {}).items():
                link_or_copy(Path(src), tmp / name)
            with open(tmp / MARKER, "w") as f:
                json.dump({**meta, "epoch": epoch, "batch": batch, "world_size": acc.num_processes}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            if final.exists():  # the same position saved again (after a resume): swap, never delete first
                old = self.dir / f".old-{name}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
            for stale in list_checkpoints(self.dir.parent)[:-self.keep]:
                shutil.rmtree(stale)
        acc.wait_for_everyone()
        return final

    def load(self, ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restores the Accelerate state and returns ``(train_state of this rank, meta)``.

        Raises:
            CheckpointError: The checkpoint is corrupt, incomplete, or from another number of processes.
        """
        acc = self.accelerator
        try:
            meta = json.loads((ckpt / MARKER).read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {ckpt} is unreadable ({e}): resume from an earlier checkpoint "
                                  f"of {ckpt.parent}") from e
        if meta.get("world_size") != acc.num_processes:
            raise CheckpointError(
                f"checkpoint {ckpt} was written by {meta.get('world_size')} processes, this run has "
                f"{acc.num_processes}: launch the same number of processes to continue exactly")
        state_file = ckpt / f"train_state_{acc.process_index}.pt"
        try:
            acc.load_state(str(ckpt))
            train_state = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as e:
            others = [p.name for p in list_checkpoints(ckpt.parent.parent) if p != ckpt]
            raise CheckpointError(
                f"checkpoint {ckpt} is corrupt or does not match this run's model/optimizer/EMA settings "
                f"({type(e).__name__}: {e}); resume from another checkpoint"
                + (f" ({', '.join(others)})" if others else "") + " or start a new run") from e
        return train_state, meta
