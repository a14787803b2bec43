"""Helpers for the mixkit-train tests: a tiny learnable ImageFolder and the small-model arguments."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# A model that trains in well under a second per batch on the CPU (blocks [1,1,1,1], widths 8-64).
TINY_MODEL = ["--model", "preact_resnet_tiny_cifar", "--model-kwargs", "base_width=8"]


def make_image_folder(root: Path, *, classes: int = 4, train_per_class: int = 8, val_per_class: int = 3,
                      size: int = 20, seed: int = 0) -> Path:
    """``root/{train,val}/class_<k>/<i>.png``: noisy images whose mean colour depends on the class."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 215, size=(classes, 3))
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k in range(classes):
            d = root / split / f"class_{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(base[k] + rng.normal(0, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def tiny_args(data: Path, out: Path, *extra: str, epochs: int = 1, batch_size: int = 8) -> list[str]:
    """mixkit-train arguments for a seconds-long CPU run on ``make_image_folder``'s data."""
    return ["--data-dir", str(data), "--val-split", "val", *TINY_MODEL, "--img-size", "16",
            "--epochs", str(epochs), "-b", str(batch_size), "--workers", "0", "--lr", "0.05",
            "--sched", "step", "--warmup-epochs", "0", "--decay-epochs", "100", "--output", str(out),
            "--experiment", "run", "--no-progress", "--log-interval", "1", *extra]


def run_cli(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 300,
            launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Runs ``python -m mixkit.train`` (or a launcher command) in a subprocess with one torch thread."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    cmd = (launcher or [sys.executable]) + ["-m", "mixkit.train", *argv]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def train_in_process(argv: list[str]) -> dict:
    """Runs mixkit-train in this process (a fresh Accelerate state) and returns its summary."""
    from accelerate.state import AcceleratorState

    from mixkit.train import parse_args, train

    AcceleratorState._reset_state(True)
    try:
        return train(parse_args(argv))
    finally:
        AcceleratorState._reset_state(True)


def main_in_process(argv: list[str]) -> int:
    """Runs mixkit-train's console entry (``mixkit.train.main``: errors printed, an exit code) in this process,
    with a fresh Accelerate state; returns its exit code."""
    from accelerate.state import AcceleratorState

    from mixkit.train import main

    AcceleratorState._reset_state(True)
    try:
        return main(argv)
    finally:
        AcceleratorState._reset_state(True)


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))
