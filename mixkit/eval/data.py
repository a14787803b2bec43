"""Evaluation images in pixel space [0, 1]: the attacks need pixels, the model normalises inside.

Fashion-MNIST (``dataset: fashion_mnist`` in a run's args.yaml) is the 10,000-image test split of
Debian's package; anything else is the validation split of an ImageFolder, read through
``mixkit.data.create_loader`` with mean 0 and std 1 (timm's evaluation transform: resize to
``img_size / crop_pct``, centre crop, no normalisation).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["EvalData", "VAL_SPLITS", "fashion_mnist_test", "find_val_split", "image_folder_val"]

VAL_SPLITS = ("val", "validation")
"""timm's validation split folder names, tried in this order after the run's own --val-split."""

FASHION_MNIST = "fashion_mnist"


@dataclass
class EvalData:
    """Batches of (pixels in [0, 1], class indices) and what they are.

    Attributes:
        batches: Re-iterable batches.
        num_samples: Samples in one pass.
        num_batches: Batches in one pass (for the progress bar).
        source: Human-readable description (dataset and split, or folder).
    """

    batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    num_samples: int
    num_batches: int
    source: str


class _TensorBatches:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.labels), self.batch_size):
            yield self.images[i:i + self.batch_size], self.labels[i:i + self.batch_size]


def fashion_mnist_test(*, img_size: int = 28, in_chans: int = 1, batch_size: int = 256,
                       limit: int | None = None, root: str | os.PathLike | None = None) -> EvalData:
    """The Fashion-MNIST test split as pixels in [0, 1], resized to ``img_size`` and repeated to ``in_chans``.

    Args:
        img_size: Side length the model was trained at (bilinear resize, with antialiasing, when not 28).
        in_chans: 1, or 3 (the grey channel repeated).
        batch_size: Images per batch.
        limit: Keep only the first this many images (None: all 10,000).
        root: Folder of the IDX files (default: Debian's dataset-fashion-mnist).
    """
    from ..datasets import FashionMNIST

    if in_chans not in (1, 3):
        raise ValueError(f"Fashion-MNIST is greyscale: a model with in_chans={in_chans} cannot take it (1 or 3)")
    ds = FashionMNIST(train=False) if root is None else FashionMNIST(root=root, train=False)
    images, labels = ds.images, ds.labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = images.unsqueeze(1).float() / 255
    if img_size != x.shape[-1]:
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True,
                          align_corners=False).clamp_(0, 1)
    if in_chans == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    batches = _TensorBatches(x, labels, batch_size)
    return EvalData(batches, len(labels), len(batches), f"Fashion-MNIST test split ({len(labels)} images)")


def find_val_split(data_dir: str | os.PathLike, val_split: str | None = None) -> Path:
    """The validation folder of an ImageFolder root: ``val_split`` if given and present, else val/validation.

    Raises:
        FileNotFoundError: The root is missing, or has none of the split folders (the message lists them).
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist: pass --data-dir with the ImageFolder root "
                                "that holds the validation split (val/ or validation/)")
    names = [val_split] if val_split else []
    names += [n for n in VAL_SPLITS if n not in names]
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root} has no validation split folder ({', '.join(names)}): pass --split NAME, or "
                            "--data-dir pointing at the folder that holds it")


def image_folder_val(data_dir: str | os.PathLike, *, img_size: int, in_chans: int = 3, split: str | None = None,
                     crop_pct: float = 0.875, interpolation: str = "bilinear", batch_size: int = 256,
                     workers: int = 2) -> EvalData:
    """The validation split of an ImageFolder as pixels in [0, 1] (timm's evaluation transform, no normalisation).

    Args:
        data_dir: ImageFolder root (holding ``val/`` or ``validation/``) or a split folder itself.
        img_size: Side length of the centre crop.
        in_chans: 3, or 1 (ITU-R 601 luma, PIL's 'L' conversion).
        split: Split folder name tried first (the run's ``val_split``).
        crop_pct: Centre-crop fraction.
        interpolation: Resize interpolation (timm name).
        batch_size: Images per batch.
        workers: Loader worker processes.
    """
    from ..data import create_loader

    if in_chans not in (1, 3):
        raise ValueError(f"ImageFolder images are read as RGB: in_chans must be 1 or 3, got {in_chans}")
    root = Path(data_dir).expanduser()
    folder = root if split is None and _is_class_folder_root(root) else find_val_split(root, split)
    loader = create_loader("torch", folder, batch_size=batch_size, is_training=False, img_size=img_size,
                           num_workers=workers, device="cpu", rank=0, world_size=1, mean=(0.0, 0.0, 0.0),
                           std=(1.0, 1.0, 1.0), crop_pct=crop_pct, interpolation=interpolation)
    batches: Iterable = loader if in_chans == 3 else _Luma(loader)
    n = loader.shard_size if hasattr(loader, "shard_size") else len(loader.dataset)
    return EvalData(batches, n, len(loader), f"ImageFolder {folder} ({n} images)")


def _is_class_folder_root(root: Path) -> bool:
    # A split folder itself (root/<class>/<image>) rather than an ImageFolder root with split folders.
    return root.is_dir() and not any((root / n).is_dir() for n in VAL_SPLITS) and any(
        p.is_dir() and not p.name.startswith(".") for p in root.iterdir())


_LUMA = (0.299, 0.587, 0.114)


class _Luma:
    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        w = torch.tensor(_LUMA).view(1, 3, 1, 1)
        for x, y in self.loader:
            yield (x * w.to(x)).sum(dim=1, keepdim=True), y


def as_floats(values: Sequence[float] | float, n: int, name: str) -> tuple[float, ...]:
    """A per-channel statistic as n floats (one value is repeated)."""
    vals = (float(values),) if isinstance(values, int | float) else tuple(float(v) for v in values)
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise ValueError(f"{name} has {len(vals)} values for a model with {n} input channels: pass --{name} "
                         f"with one value, or one per channel")
    return vals
