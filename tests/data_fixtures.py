"""Helpers for the mixkit.data tests: a colour-coded ImageFolder whose samples identify themselves.

Every file is a solid colour from a well-separated grid, unique to the file. Cropping, resizing and
flipping keep a solid image solid, so the colour of any output image, denormalised, names the file it
came from whatever the backend did: labels and epoch coverage are checked against that, independently
of the loader under test.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

LEVELS = (0, 85, 170, 255)
COLOURS = np.array(list(itertools.product(LEVELS, repeat=3)), dtype=np.float64)  # 64 colours


@dataclass(frozen=True)
class ColourFolder:
    """A colour-coded ImageFolder: ``colour_of[path]`` and ``class_of_colour[i]`` (an index into
    ``COLOURS``), and the files in torchvision order."""

    root: Path
    classes: list[str]
    files: list[str]
    colour_of: dict[str, int]
    class_of_colour: dict[int, int]


def make_colour_folder(root: Path, per_class: tuple[int, ...] = (7, 8, 9), size: tuple[int, int] = (40, 56),
                       ) -> ColourFolder:
    """Writes ``root/class_<k>/<i>.jpg`` solid-colour JPEGs, one colour per file."""
    classes = [f"class_{k}" for k in range(len(per_class))]
    colour_of, class_of_colour, files = {}, {}, []
    c = 0
    for k, n in enumerate(per_class):
        (root / classes[k]).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            # Skip the first grid colours so that no sample is pure black (a common fill value).
            colour = 5 + c * 3 % 59
            c += 1
            path = root / classes[k] / f"{i:03d}.jpg"
            img = np.broadcast_to(COLOURS[colour].astype(np.uint8), (*size, 3))
            Image.fromarray(np.ascontiguousarray(img)).save(path, quality=95)
            colour_of[str(path)] = colour
            class_of_colour[colour] = k
            files.append(str(path))
    return ColourFolder(root=root, classes=classes, files=files, colour_of=colour_of,
                        class_of_colour=class_of_colour)


def identify(images: torch.Tensor) -> list[int]:
    """The colour index of each normalised NCHW image (its file's identity)."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1) * 255
    rgb = (images.detach().float().cpu() * std + mean).mean(dim=(2, 3)).double().numpy()
    dist = np.linalg.norm(rgb[:, None, :] - COLOURS[None], axis=2)
    assert dist.min(axis=1).max() < 20, "an output image is not close to any sample colour"
    return dist.argmin(axis=1).tolist()


def run_epoch(loader) -> tuple[list[int], list[int], list[tuple]]:
    """Iterates one epoch: sample identities, labels and per-batch (shape, dtype, label dtype)."""
    ids, labels, meta = [], [], []
    for images, y in loader:
        meta.append((tuple(images.shape), images.dtype, y.dtype, tuple(y.shape), images.device))
        ids.extend(identify(images))
        labels.extend(y.tolist())
    return ids, labels, meta


def write_truncated_jpeg(path: Path) -> None:
    """A real photo-like JPEG cut in half."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_corrupt_jpeg(path: Path) -> None:
    """Random bytes named .jpg."""
    path.write_bytes(np.random.default_rng(1).integers(0, 255, 500, dtype=np.uint8).tobytes())
