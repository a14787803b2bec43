"""The CUB-200-2011 layout reader and Placed Fashion-MNIST (objects on cluttered canvases with their boxes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eval_fixtures import make_cub

from mixkit.datasets import (
    DEFAULT_FASHION_MNIST_ROOT,
    PLACED_FASHION_MNIST_MEAN,
    PLACED_FASHION_MNIST_STD,
    PlacedConfig,
    PlacedFashionMNIST,
    cub_index,
    read_cub,
)

needs_fmnist = pytest.mark.skipif(not (DEFAULT_FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Debian's dataset-fashion-mnist is not installed")


def test_cub_reader(tmp_path: Path):
    root = make_cub(tmp_path / "CUB_200_2011", classes=3, train_per_class=2, test_per_class=1)
    rec = read_cub(root, boxes=True)
    assert len(rec) == 9 and rec.classes == ["001.Bird_0", "002.Bird_1", "003.Bird_2"]
    assert rec.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert rec.split(True).tolist() == [0, 1, 3, 4, 6, 7] and rec.split(False).tolist() == [2, 5, 8]
    # bounding_boxes.txt's "x y width height" becomes x0 y0 x1 y1.
    first = (root / "bounding_boxes.txt").read_text().split("\n")[0].split()
    x, y, w, h = (float(v) for v in first[1:])
    assert rec.boxes[0].tolist() == [x, y, x + w, y + h]
    index = cub_index(rec, train=False)
    assert [label for _, label in index.samples] == [0, 1, 2] and index.classes == rec.classes
    assert read_cub(root).boxes is None  # boxes only when asked for


@pytest.mark.parametrize("breakage, error, match", [
    (lambda r: (r / "train_test_split.txt").unlink(), FileNotFoundError, "train_test_split.txt missing"),
    (lambda r: (r / "bounding_boxes.txt").unlink(), FileNotFoundError, "bounding_boxes.txt missing"),
    (lambda r: (r / "images" / "001.Bird_0" / "Bird_0_0000.jpg").unlink(), FileNotFoundError,
     "1 image\\(s\\) of .*images.txt missing"),
    (lambda r: (r / "image_class_labels.txt").write_text("1 1\n2 1\n"), ValueError,
     "does not list the image ids of images.txt: 8 missing"),
    (lambda r: (r / "bounding_boxes.txt").write_text(
        (r / "bounding_boxes.txt").read_text().replace("\n", " 7\n", 1)), ValueError, "line 1: expected an image id"),
    (lambda r: (r / "train_test_split.txt").write_text(
        (r / "train_test_split.txt").read_text().replace(" 1\n", " 2\n", 1)), ValueError, "must be 1 .* or 0"),
])
def test_cub_bad_input(tmp_path: Path, breakage, error, match):
    root = make_cub(tmp_path / "cub")
    breakage(root)
    with pytest.raises(error, match=match):
        read_cub(root, boxes=True)


def test_cub_missing_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="pass --data-dir CUB_200_2011"):
        read_cub(tmp_path / "nope")


@needs_fmnist
def test_placed_is_deterministic_and_a_limit_keeps_the_first_canvases():
    a = PlacedFashionMNIST(train=False, limit=300)
    b = PlacedFashionMNIST(train=False, limit=120)
    assert torch.equal(a.images[:120], b.images) and torch.equal(a.boxes[:120], b.boxes)
    c = PlacedFashionMNIST(train=False, limit=120, config=PlacedConfig(seed=1))
    assert not torch.equal(b.images, c.images)
    assert a.images.shape == (300, 64, 64) and a.images.dtype == torch.uint8 and a.labels.shape == (300,)


@needs_fmnist
def test_placed_boxes_hold_the_object():
    """Without clutter and noise the canvas is the object alone: its non-zero pixels' box matches the stated
    box to within the one-pixel blur of the resize (the stated box is computed from the 28 x 28 source)."""
    from mixkit.datasets import FashionMNIST

    cfg = PlacedConfig(clutter=0, noise=0.0)
    ds = PlacedFashionMNIST(train=False, limit=200, config=cfg)
    src = FashionMNIST(train=False).images[:200]
    for img, box, obj in zip(ds.images.numpy(), ds.boxes.numpy(), src.numpy(), strict=True):
        rows, cols = np.flatnonzero((img > 0).any(1)), np.flatnonzero((img > 0).any(0))
        painted = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)
        # The object's side: its tight box spans (box width) / (source columns) canvas pixels per source pixel.
        per_pixel = (box[2] - box[0]) / (obj > 0).any(0).sum()
        # Bilinear resizing spreads an edge by up to half a source pixel, plus the rounding to whole pixels.
        assert np.abs(painted - box).max() <= 0.5 * max(per_pixel, 1) + 1.0
        assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64
    sides = (ds.boxes[:, 2:] - ds.boxes[:, :2]).max(1).values
    assert sides.min() >= 1 and sides.max() <= 0.8 * 64 + 1e-4


@needs_fmnist
@pytest.mark.slow  # draws all 60,000 training canvases (about 6 s)
def test_placed_statistics_constants():
    x = PlacedFashionMNIST(train=True).images.float() / 255
    assert x.mean().item() == pytest.approx(PLACED_FASHION_MNIST_MEAN[0], abs=2e-4)
    assert x.std().item() == pytest.approx(PLACED_FASHION_MNIST_STD[0], abs=2e-4)


def test_placed_config_is_checked():
    with pytest.raises(ValueError, match="scale must satisfy"):
        PlacedConfig(scale=(0.9, 0.5))
    with pytest.raises(ValueError, match="under 4 px"):
        PlacedConfig(canvas=8, scale=(0.1, 0.5))


def test_memory_loader_one_channel_batches_have_standard_strides():
    """Placed Fashion-MNIST trains at 64 px through the 'memory' backend: its shifted batches must not keep the
    channels-last strides of the gather (torch 2.14's CPU convolution backward corrupts the heap on one-channel
    64 px inputs with strides (4096, 1, 64, 1))."""
    from mixkit.data import create_loader

    images, labels = torch.randint(0, 255, (40, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (40,))
    loader = create_loader("memory", (images, labels), batch_size=16, is_training=True, img_size=64, mean=(0.3,),
                           std=(0.3,), device="cpu", seed=0)
    x, _ = next(iter(loader))
    assert x.shape == (16, 1, 64, 64) and x.stride() == (4096, 4096, 64, 1)
