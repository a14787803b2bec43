"""Training and evaluation loaders from ``mixkit-train``'s arguments.

``--dataset ''`` reads ``--data-dir`` through ``mixkit.data.create_loader`` (ImageFolder split folders for
'torch' and 'dali', ``<split>.beton`` files for 'ffcv'); ``--dataset fashion_mnist`` reads Debian's offline
IDX files into memory and serves them through ``TensorLoader``, which has the same contract (sharding by
rank, ``set_epoch``, normalised NCHW batches on the device).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mixkit.data import create_loader, list_backends, shard_indices

__all__ = ["FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "DataSpec", "TensorLoader", "build_loaders",
           "count_classes", "progressive_size", "resolve_data_spec", "resolve_split"]

# Per-channel statistics of Fashion-MNIST's 60,000 training images (0-1 scale).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
DATASETS = ("", "fashion_mnist")

# timm's split-folder synonyms (timm.data.dataset_factory): a missing split is an error here, where timm
# would silently fall back to the root folder.
_TRAIN_SPLITS = ("train", "training")
_EVAL_SPLITS = ("validation", "val", "valid", "eval", "evaluation")


def resolve_split(root: str | os.PathLike, split: str, *, suffix: str = "") -> Path:
    """The folder (or ``<split><suffix>`` file) of ``split`` under ``root``, trying timm's synonyms.

    Raises:
        FileNotFoundError: The root or the split is missing; the message names what was tried.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist: pass --data-dir <ImageFolder root> "
                                "(with train/ and val/ or validation/ inside), or --dataset fashion_mnist")
    synonyms = _TRAIN_SPLITS if split in _TRAIN_SPLITS else _EVAL_SPLITS if split in _EVAL_SPLITS else ()
    tried = [split, *[s for s in synonyms if s != split]]
    for name in tried:
        path = root / f"{name}{suffix}"
        if path.exists():
            return path
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    flag = "--train-split" if split in _TRAIN_SPLITS else "--val-split"
    raise FileNotFoundError(
        f"{root} has no {' / '.join(n + suffix for n in tried)} for split {split!r} (it holds: "
        f"{', '.join(found) or 'nothing'}): put the split there or name it with {flag}"
        + (" ('' skips evaluation)" if flag == "--val-split" else ""))


def count_classes(split_dir: Path) -> int | None:
    """Number of class folders of an ImageFolder split (None for a .beton or webdataset source)."""
    if not split_dir.is_dir():
        return None
    classes = [p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return len(classes) or None


@dataclass
class DataSpec:
    """What the data fixes before the model exists: sources, classes and channels."""

    dataset: str
    train_source: Path | None
    eval_source: Path | None
    num_classes: int | None
    in_chans: int
    native_size: int | None = None
    default_mean: tuple[float, ...] | None = None
    default_std: tuple[float, ...] | None = None


def resolve_data_spec(args) -> DataSpec:
    """Checks the data arguments and finds the split sources, before any model or loader is built."""
    if args.dataset not in DATASETS:
        raise ValueError(f"unknown --dataset {args.dataset!r}: use '' (an ImageFolder under --data-dir) or "
                         "'fashion_mnist'")
    if args.loader not in list_backends():
        raise ValueError(f"unknown --loader {args.loader!r}: choose one of {', '.join(list_backends())}")
    if args.dataset == "fashion_mnist":
        from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT

        root = Path(args.data_dir) if args.data_dir else DEFAULT_FASHION_MNIST_ROOT
        files = [root / f"{s}-{k}-idx{d}-ubyte.gz" for s in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"Fashion-MNIST files missing: {', '.join(missing)}. Install Debian's package "
                                    "(apt-get install dataset-fashion-mnist, or `make install-demo-data`) or pass "
                                    "--data-dir <folder with the IDX .gz files>")
        if args.loader != "torch":
            raise ValueError("--dataset fashion_mnist is read into memory: use --loader torch (the default)")
        return DataSpec("fashion_mnist", root, root if args.val_split else None, 10, 1, 28,
                        FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    if not args.data_dir:
        raise ValueError("no data: pass --data-dir <ImageFolder root with train/ and val/> or "
                         "--dataset fashion_mnist")
    suffix = ".beton" if args.loader == "ffcv" else ""
    train = resolve_split(args.data_dir, args.train_split, suffix=suffix)
    val = resolve_split(args.data_dir, args.val_split, suffix=suffix) if args.val_split else None
    return DataSpec("", train, val, count_classes(train), 3)


class TensorLoader:
    """Batches from in-memory uint8 images, with mixkit.data's loader contract (shards by rank, ``set_epoch``,
    ``len()`` = batches of this rank, normalised float NCHW images and int64 labels on the device).

    Kept apart from ``mixkit.data.LoaderBase`` on purpose: it reads no files, so it needs none of the
    backends' machinery. Training: a random translation (zero padding by ``pad`` pixels, then a crop back to
    size) and a horizontal flip, drawn from a generator seeded by (seed, epoch, rank), so an epoch's batches
    depend on nothing but those three numbers (exact resume needs no extra state). Evaluation: the images
    as they are, every sample once across ranks.

    Args:
        images: uint8 (N, H, W) or (N, C, H, W).
        labels: int64 (N,).
        batch_size: Samples per batch.
        is_training: Training or evaluation mode.
        img_size: Output side; other sizes are resized (bilinear).
        device: Target device.
        mean: Normalisation mean (0-1 scale), one value per channel.
        std: Normalisation std.
        rank: Global rank.
        world_size: Number of processes.
        seed: Seed of the shard partition, the shuffles and the augmentation.
        hflip: Horizontal flip probability (training).
        pad: Translation range in pixels (training); None: img_size // 14.
        channels_last: Channels-last output.
        classes: Class names.
    """

    backend = "memory"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, is_training: bool,
                 img_size: int, device: torch.device, mean: Sequence[float], std: Sequence[float], rank: int,
                 world_size: int, seed: int, hflip: float = 0.5, pad: int | None = None,
                 channels_last: bool = False, classes: Sequence[str] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.is_training = is_training
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.classes = list(classes) if classes is not None else None
        self.epoch = 0
        self.images = images if images.ndim == 4 else images.unsqueeze(1)
        self.labels = labels
        chans = self.images.shape[1]
        if len(mean) != chans or len(std) != chans:
            raise ValueError(f"mean {tuple(mean)} / std {tuple(std)} need {chans} values (the images have "
                             f"{chans} channel(s)): pass --mean/--std with {chans} value(s)")
        self.img_size = img_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.seed = seed
        self.hflip = hflip
        self.pad = max(1, img_size // 14) if pad is None else pad
        self.indices = shard_indices(len(labels), rank=rank, world_size=world_size,
                                     seed=seed if is_training else None, equal_size=is_training)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next ``iter()`` run epoch ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.shard_size
        return n // self.batch_size if self.is_training else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in self._iter_epoch(epoch):
            yield x.to(self.device).contiguous(memory_format=fmt), y.to(self.device)

    @property
    def shard_size(self) -> int:
        return len(self.indices)

    def _prepare(self, idx: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
        x = self.images[torch.from_numpy(idx)].float().div_(255.0)
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                              antialias=True)
        if gen is not None:
            b, _, h, w = x.shape
            p = self.pad
            if p > 0:
                padded = F.pad(x, (p, p, p, p))
                dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
                dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
                bi = torch.arange(b)[:, None, None]
                ri = (dy[:, None] + torch.arange(h))[:, :, None]
                ci = (dx[:, None] + torch.arange(w))[:, None, :]
                x = padded.permute(0, 2, 3, 1)[bi, ri, ci].permute(0, 3, 1, 2).contiguous()
            flip = torch.rand(b, generator=gen) < self.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return (x - self.mean) / self.std

    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = None
        order = self.indices
        if self.is_training:
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch, self.rank])
                                                    .generate_state(1)[0]))
            order = order[torch.randperm(len(order), generator=gen).numpy()]
        n = len(self)
        for i in range(n):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self._prepare(idx, gen), self.labels[torch.from_numpy(idx)]


def progressive_size(epoch: int, prog_res: Sequence[int] | None, default: int) -> int:
    """FFCV's progressive resizing: linear from min_res at start_ramp to max_res at end_ramp, to a multiple
    of 32 (``default`` when off)."""
    if not prog_res:
        return default
    lo, hi, start, end = prog_res
    res = float(np.interp(epoch, [start, end], [lo, hi]))
    return int(round(res / 32)) * 32


def build_loaders(args, spec: DataSpec, *, img_size: int, mean: Sequence[float], std: Sequence[float],
                  crop_pct: float, interpolation: str, rank: int, world_size: int,
                  device: torch.device, eval_img_size: int | None = None,
                  with_eval: bool = True) -> tuple[Any, Any]:
    """The training and evaluation loaders of this rank (evaluation None when --val-split is '')."""
    eval_img_size = eval_img_size or img_size
    eval_bs = args.validation_batch_size or args.batch_size
    if spec.dataset == "fashion_mnist":
        from mixkit.datasets import FashionMNIST

        train_ds = FashionMNIST(root=spec.train_source, train=True)
        train = TensorLoader(train_ds.images, train_ds.labels, batch_size=args.batch_size, is_training=True,
                             img_size=img_size, device=device, mean=mean, std=std, rank=rank,
                             world_size=world_size, seed=args.seed, hflip=args.hflip,
                             channels_last=args.channels_last, classes=FashionMNIST.classes)
        val = None
        if spec.eval_source is not None and with_eval:
            test_ds = FashionMNIST(root=spec.eval_source, train=False)
            val = TensorLoader(test_ds.images, test_ds.labels, batch_size=eval_bs, is_training=False,
                               img_size=eval_img_size, device=device, mean=mean, std=std, rank=rank,
                               world_size=world_size, seed=args.seed, channels_last=args.channels_last,
                               classes=FashionMNIST.classes)
        return train, val
    common = dict(num_workers=args.workers, device=device, channels_last=args.channels_last,
                  rank=rank, world_size=world_size, seed=args.seed, mean=tuple(mean), std=tuple(std),
                  crop_pct=crop_pct)
    extra = {}
    if args.loader == "torch":
        # Fresh workers every epoch: their seeds then come from the main process's RNG at the epoch start,
        # which a checkpoint restores, so a resumed epoch draws the same augmentation.
        extra = dict(persistent_workers=False, interpolation=interpolation or "bilinear")
    train = create_loader(args.loader, spec.train_source, batch_size=args.batch_size, is_training=True,
                          img_size=img_size, scale=tuple(args.scale), ratio=tuple(args.ratio), hflip=args.hflip, **common, **extra)
    val = None
    if spec.eval_source is not None and with_eval:
        val = create_loader(args.loader, spec.eval_source, batch_size=eval_bs, is_training=False,
                            img_size=eval_img_size, **common, **extra)
    return train, val
