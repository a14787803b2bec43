"""Evaluation images in pixel space [0, 1]: the attacks need pixels, the model normalises inside.

Fashion-MNIST (``dataset: fashion_mnist`` in a run's args.yaml) is the 10,000-image test split of
Debian's package; anything else is the validation split under a data directory, read through
``mixkit.data.create_loader`` with mean 0 and std 1: an ImageFolder split with the 'torch' backend (timm's
evaluation transform: resize to ``img_size / crop_pct``, centre crop, no normalisation), a
``<split>.beton`` with 'ffcv' (the evaluation decoder of an ffcv run, centre crop at ``crop_pct``), a folder
of webdataset shards with 'dali'. With a run's class names (``class_map``) the split is labelled by name,
as mixkit-train labels it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["EvalData", "VAL_SPLITS", "fashion_mnist_test", "find_val_split", "image_folder_val", "training_classes"]

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
    """The validation split under a data directory: ``val_split`` if given and present, else val/validation;
    each name as a folder (an ImageFolder split, or webdataset shards) or as ``<name>.beton`` (an ffcv run's
    data directory).

    Raises:
        FileNotFoundError: The root is missing, or has none of the splits (the message lists what was tried).
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist: pass --data-dir with the folder that holds "
                                f"the validation split ({_SPLIT_KINDS})")
    names = [val_split] if val_split else []
    names += [n for n in VAL_SPLITS if n not in names]
    for name in names:
        if (root / name).is_dir():
            return root / name
        if (root / f"{name}.beton").is_file():
            return root / f"{name}.beton"
    raise FileNotFoundError(f"{root} has no validation split (tried {', '.join(n + '/' for n in names)} and "
                            f"{', '.join(n + '.beton' for n in names)}): pass --split NAME, or --data-dir with the "
                            f"folder that holds it ({_SPLIT_KINDS}), or a .beton file itself")


_SPLIT_KINDS = ("an ImageFolder root with val/ or validation/ class folders; for an ffcv run the folder of "
                "<split>.beton files written by `mixkit convert`; for webdataset shards the folder of <split>/ "
                "shard folders")


def image_folder_val(data_dir: str | os.PathLike, *, img_size: int, in_chans: int = 3, split: str | None = None,
                     crop_pct: float = 0.875, interpolation: str = "bilinear", batch_size: int = 256,
                     workers: int = 2, class_map: Sequence[str] | None = None,
                     validate: str = "full") -> EvalData:
    """The validation split under a data directory as pixels in [0, 1] (no normalisation): an ImageFolder
    split, a ``<split>.beton`` or a folder of webdataset shards (see the module docstring).

    Args:
        data_dir: Data root (holding ``val/``, ``validation/`` or ``<split>.beton``), a split folder itself, or
            a .beton file.
        img_size: Side length of the centre crop.
        in_chans: 3, or 1 (ITU-R 601 luma, PIL's 'L' conversion).
        split: Split name tried first (the run's ``val_split``).
        crop_pct: Centre-crop fraction.
        interpolation: Resize interpolation (timm name; the 'torch' backend's).
        batch_size: Images per batch.
        workers: Loader worker processes ('torch') or threads ('ffcv', 'dali').
        class_map: The training classes in label order (a run's ``classes``): samples are labelled by class
            name; a class they do not hold is a ValueError. None: the split's own sorted classes.
        validate: ImageFolder checking before the first batch, 'none', 'header' or 'full'
            (``mixkit.data.scan_image_folder``).
    """
    from ..data import create_loader
    from ..data.wds_index import find_tar_shards

    if in_chans not in (1, 3):
        raise ValueError(f"the evaluation images are read as RGB: in_chans must be 1 or 3, got {in_chans}")
    root = Path(data_dir).expanduser()
    is_split = root.suffix == ".beton" or _is_class_folder_root(root) or (
        root.is_dir() and find_tar_shards(root) is not None)
    source = root if split is None and is_split else find_val_split(root, split)
    shared = dict(batch_size=batch_size, is_training=False, img_size=img_size, device="cpu", rank=0, world_size=1,
                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=crop_pct, class_map=class_map)
    if source.suffix == ".beton":
        kind, loader = ".beton", create_loader("ffcv", source, num_workers=max(1, workers), **shared)
    elif find_tar_shards(source) is not None:
        kind, loader = "webdataset shards", create_loader("dali", source, num_workers=max(1, workers), **shared)
    else:
        kind, loader = "ImageFolder", create_loader("torch", source, num_workers=workers, interpolation=interpolation,
                                                     validate=validate, **shared)
    batches: Iterable = loader if in_chans == 3 else _Luma(loader)
    n = loader.shard_size
    return EvalData(batches, n, len(loader), f"{kind} {source} ({n} images)")


def training_classes(settings: dict) -> list[str] | None:
    """A run's training classes in label order: its args.yaml's ``classes``, or for a run written before they
    were recorded, the class names of its training split under its ``data_dir`` (None when neither exists:
    the evaluation split's own sorted classes are used, with a warning)."""
    from ..data.classes import source_classes

    if settings.get("classes"):
        return list(settings["classes"])
    data_dir = settings.get("data_dir")
    if data_dir and settings.get("dataset") in (None, ""):
        names = [settings.get("train_split") or "train", "train", "training"]
        for name in names:
            for path in (Path(data_dir) / f"{name}.beton", Path(data_dir) / name):
                if path.exists():
                    classes = source_classes(path)
                    if classes:
                        return classes
    warnings.warn("the run records no class names (args.yaml without 'classes', and no training split under its "
                  "data_dir): the evaluation split is labelled by its own sorted class folders, which is right only "
                  "if it holds every training class", stacklevel=2)
    return None


def _is_class_folder_root(root: Path) -> bool:
    # A split folder itself (root/<class>/<image>) rather than an ImageFolder root with split folders.
    return root.is_dir() and not any((root / n).is_dir() or (root / f"{n}.beton").is_file() for n in VAL_SPLITS) \
        and any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())


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
