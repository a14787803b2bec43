"""Helpers of the evaluation and visualisation tests: fabricated mixkit-train runs and a trained tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import yaml
from torch import nn

import mixkit  # noqa: F401  (registers preact_resnet_tiny_cifar)
from mixkit.rundir import save_model_safetensors

FMNIST_MEAN, FMNIST_STD = [0.286], [0.353]


def make_run(run_dir: Path, *, dataset: str | None = "fashion_mnist", data_dir: str | None = None,
             in_chans: int = 1, img_size: int = 28, num_classes: int = 10, seed: int = 0,
             model: nn.Module | None = None, **extra: Any) -> Path:
    """A run directory as mixkit-train writes it: args.yaml and model.safetensors (random weights)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {"base_width": 4}
    if model is None:
        torch.manual_seed(seed)
        model = timm.create_model("preact_resnet_tiny_cifar", num_classes=num_classes, in_chans=in_chans, **kwargs)
    args = {"model": "preact_resnet_tiny_cifar", "model_kwargs": kwargs, "num_classes": num_classes,
            "in_chans": in_chans, "img_size": img_size, "mean": FMNIST_MEAN * in_chans, "std": FMNIST_STD * in_chans,
            "dataset": dataset, "data_dir": data_dir, "val_split": "validation", **extra}
    (run_dir / "args.yaml").write_text(yaml.safe_dump(args))
    save_model_safetensors(model, run_dir / "model.safetensors")
    return run_dir


def blob_data(n: int, *, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four separable classes of (1, size, size) pixels in [0, 1]: a bright square in quadrant ``label``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 0.4
    half = size // 2
    for label in range(4):
        r, c = divmod(label, 2)
        x[y == label, :, r * half:(r + 1) * half, c * half:(c + 1) * half] += 0.45
    return x.clamp(0, 1), y


def train_blob_model(steps: int = 60, seed: int = 0) -> nn.Module:
    """A small CNN trained for a couple of seconds on ``blob_data``, taking pixels (it normalises inside)."""
    from mixkit.eval import NormalizedModel

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 4))
    model = NormalizedModel(net, [0.4], [0.25])
    x, y = blob_data(512, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        idx = torch.arange(step * 64, (step + 1) * 64) % len(y)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def make_cub(root: Path, *, classes: int = 2, train_per_class: int = 3, test_per_class: int = 2,
             seed: int = 0, full_box_every: int = 0) -> Path:
    """A CUB-200-2011 folder in its own layout: a bright rectangle (the 'bird', its box in bounding_boxes.txt)
    on a noisy background, images of varying size, the class in the rectangle's colour channel.

    ``full_box_every``: every that many test images get a box covering the whole image (0: none)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [], "bounding_boxes.txt": [],
             "classes.txt": []}
    image_id = test_seen = 0
    for k in range(classes):
        folder = f"{k + 1:03d}.Bird_{k}"
        lines["classes.txt"].append(f"{k + 1} {folder}")
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(train_per_class + test_per_class):
            image_id += 1
            is_train = i < train_per_class
            w, h = int(rng.integers(30, 50)), int(rng.integers(24, 40))
            pixels = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
            bw, bh = int(rng.integers(6, w // 2)), int(rng.integers(6, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            pixels[y:y + bh, x:x + bw, k % 3] = 230
            if not is_train:
                test_seen += 1
                if full_box_every and test_seen % full_box_every == 0:
                    x, y, bw, bh = 0, 0, w, h
            name = f"{folder}/Bird_{k}_{i:04d}.jpg"
            Image.fromarray(pixels).save(root / "images" / name, quality=95)
            lines["images.txt"].append(f"{image_id} {name}")
            lines["image_class_labels.txt"].append(f"{image_id} {k + 1}")
            lines["train_test_split.txt"].append(f"{image_id} {int(is_train)}")
            lines["bounding_boxes.txt"].append(f"{image_id} {x}.0 {y}.0 {bw}.0 {bh}.0")
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return root


def make_idx_fashion_mnist(root: Path, *, train: int = 64, test: int = 40, seed: int = 0) -> Path:
    """A tiny Fashion-MNIST folder (the four IDX .gz files): a bright rectangle per 28 x 28 image, the class in
    its width, so that mixkit-train can read it through --data-dir in seconds."""
    import gzip

    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for i, y in enumerate(labels):
            w, h = 6 + 2 * int(y), int(rng.integers(8, 24))
            x0, y0 = int(rng.integers(0, 28 - w + 1)), int(rng.integers(0, 28 - h + 1))
            images[i, y0:y0 + h, x0:x0 + w] = 200
        header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
        with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header + images.tobytes())
        with gzip.open(root / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 0x08, 1]) + n.to_bytes(4, "big") + labels.tobytes())
    return root
