"""Placed Fashion-MNIST: an offline localization set with known boxes, deterministic from a seed.

Each sample is one Fashion-MNIST object (Debian's IDX files), resized to a random side and pasted at a
random position on a larger canvas cluttered with noise and with fragments of other objects of the same
split. Its box is the tight box of the object's non-zero pixels in the 28 x 28 source, mapped through the
resize and the shift: ``x0 = left + col0 * side / 28`` and ``x1 = left + (col1 + 1) * side / 28`` (continuous
pixel coordinates, ``x1`` exclusive), so it is exact, not read back from the blurred canvas.

Nothing in torchvision or timm places objects on canvases with their boxes; this is written by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST

__all__ = ["PLACED_FASHION_MNIST_MEAN", "PLACED_FASHION_MNIST_STD", "PlacedConfig", "PlacedFashionMNIST"]

# Per-channel statistics of the 60,000 default training canvases (0-1 scale), measured with
# PlacedFashionMNIST(train=True) (tests/test_datasets_placed.py checks them).
PLACED_FASHION_MNIST_MEAN = (0.2206,)
PLACED_FASHION_MNIST_STD = (0.2209,)

_SOURCE = 28
_NOISE_BLOCK = 1000


@dataclass(frozen=True)
class PlacedConfig:
    """How the canvases are drawn.

    Attributes:
        canvas: Canvas side in pixels.
        scale: Range of the object's side as a fraction of the canvas side.
        clutter: Fragments of other objects per canvas.
        fragment: Range of a fragment's side in pixels (a square cut from another object's 28 x 28 image).
        fragment_gain: Brightness of the fragments relative to the object.
        noise: Largest value of the uniform background noise (0-1 scale).
        seed: Seed; the training and test splits draw from separate streams of it.
    """

    canvas: int = 64
    scale: tuple[float, float] = (0.4, 0.8)
    clutter: int = 4
    fragment: tuple[int, int] = (6, 12)
    fragment_gain: float = 0.6
    noise: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1 (fractions of the canvas), got {self.scale}")
        if round(lo * self.canvas) < 4:
            raise ValueError(f"canvas {self.canvas} with scale {self.scale} draws objects under 4 px: enlarge either")
        if self.clutter < 0 or not 1 <= self.fragment[0] <= self.fragment[1] <= _SOURCE:
            raise ValueError(f"clutter must be >= 0 and fragment a side range within 1..{_SOURCE}, got "
                             f"{self.clutter} and {self.fragment}")
        if not 0 <= self.noise <= 1 or not 0 <= self.fragment_gain <= 1:
            raise ValueError(f"noise and fragment_gain are fractions in [0, 1], got {self.noise} and "
                             f"{self.fragment_gain}")


class PlacedFashionMNIST(Dataset):
    """Fashion-MNIST objects placed on cluttered canvases: uint8 images (N, S, S), labels and boxes.

    Args:
        root: Folder of Debian's Fashion-MNIST IDX files.
        train: The 60,000 training objects, else the 10,000 test objects.
        config: Canvas, scale range, clutter and seed (``PlacedConfig``).
        limit: Use only the first this many objects of the split (None: all).

    Attributes:
        images: uint8 (N, S, S) canvases.
        labels: int64 (N,) Fashion-MNIST classes.
        boxes: float32 (N, 4) ``x0, y0, x1, y1`` of each object, in canvas pixels (continuous, x1 exclusive).
    """

    classes = FashionMNIST.classes

    def __init__(self, *, root: str | os.PathLike = DEFAULT_FASHION_MNIST_ROOT, train: bool = True,
                 config: PlacedConfig | None = None, limit: int | None = None) -> None:
        self.config = config or PlacedConfig()
        source = FashionMNIST(root=root, train=train)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        n = len(source) if limit is None else min(limit, len(source))
        self.labels = source.labels[:n].clone()
        self.images, self.boxes = _draw(source.images, n, self.config, split=0 if train else 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index], self.boxes[index]


def _tight_boxes(objects: np.ndarray) -> np.ndarray:
    # (N, 4) col0, row0, col1 + 1, row1 + 1 of the non-zero pixels; an empty image gets the whole square.
    on = objects > 0
    cols, rows = on.any(1), on.any(2)
    n = _SOURCE
    c0, c1 = cols.argmax(1), n - cols[:, ::-1].argmax(1)
    r0, r1 = rows.argmax(1), n - rows[:, ::-1].argmax(1)
    empty = ~on.any((1, 2))
    c0[empty], r0[empty], c1[empty], r1[empty] = 0, 0, n, n
    return np.stack([c0, r0, c1, r1], 1).astype(np.float64)


def _draw(pool: torch.Tensor, n: int, cfg: PlacedConfig, *, split: int) -> tuple[torch.Tensor, torch.Tensor]:
    # The first n objects of the split's pool, on canvases; every draw is made for the whole pool (the noise in
    # blocks of fixed size), so the first n canvases are the same whatever ``limit`` asked for.
    rng = np.random.default_rng([cfg.seed, split])
    total, s = len(pool), cfg.canvas
    objects = pool[:n]
    lo, hi = round(cfg.scale[0] * s), round(cfg.scale[1] * s)
    sides = rng.integers(lo, hi + 1, total)[:n]
    left = (rng.random(total)[:n] * (s - sides + 1)).astype(np.int64)
    top = (rng.random(total)[:n] * (s - sides + 1)).astype(np.int64)
    canvas = np.empty((n, s, s), dtype=np.uint8)
    for start in range(0, n, _NOISE_BLOCK):
        block = np.random.default_rng([cfg.seed, split, start])
        stop = min(n, start + _NOISE_BLOCK)
        canvas[start:stop] = block.integers(0, round(cfg.noise * 255) + 1, (_NOISE_BLOCK, s, s),
                                            dtype=np.uint8)[:stop - start]
    src = pool.numpy()
    # Clutter: squares cut from other objects of the split, dimmed, pasted anywhere (they may overlap the object).
    if cfg.clutter:
        k = cfg.clutter
        donors = rng.integers(0, total, (total, k))[:n]
        fside = rng.integers(cfg.fragment[0], cfg.fragment[1] + 1, (total, k))[:n]
        fy, fx = (rng.random((2, total, k))[:, :n] * (_SOURCE - fside + 1)).astype(np.int64)
        py, px = (rng.random((2, total, k))[:, :n] * (s - fside + 1)).astype(np.int64)
        gain = np.float32(cfg.fragment_gain)
        for i in range(n):
            for j in range(k):
                f, d = fside[i, j], donors[i, j]
                piece = (src[d, fy[i, j]:fy[i, j] + f, fx[i, j]:fx[i, j] + f] * gain).astype(np.uint8)
                region = canvas[i, py[i, j]:py[i, j] + f, px[i, j]:px[i, j] + f]
                np.maximum(region, piece, out=region)
    # The objects, resized in one batch per side length (bilinear with antialiasing), pasted over the clutter.
    for side in np.unique(sides):
        idx = np.flatnonzero(sides == side)
        scaled = F.interpolate(objects[idx, None].float(), size=(int(side), int(side)), mode="bilinear",
                               antialias=True, align_corners=False)[:, 0].round_().clamp_(0, 255).to(torch.uint8)
        scaled = scaled.numpy()
        for i, obj in zip(idx, scaled, strict=True):
            region = canvas[i, top[i]:top[i] + side, left[i]:left[i] + side]
            np.maximum(region, obj, out=region)
    tight = _tight_boxes(src[:n]) * (sides / _SOURCE)[:, None]
    boxes = tight + np.stack([left, top, left, top], 1)
    return torch.from_numpy(canvas), torch.from_numpy(boxes.astype(np.float32))
