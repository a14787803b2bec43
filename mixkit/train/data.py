"""Training and evaluation loaders from ``mixkit-train``'s arguments.

``--dataset ''`` reads ``--data-dir`` through ``mixkit.data.create_loader`` (ImageFolder split folders for
'torch' and 'dali', ``<split>.beton`` files for 'ffcv'); ``--dataset fashion_mnist`` reads Debian's offline
IDX files into memory and serves them through the 'memory' backend of ``create_loader``, as does
``--dataset placed_fashion_mnist`` (its objects on cluttered 64 x 64 canvases, ``mixkit.datasets.placed``);
``--dataset cub`` reads CUB-200-2011's layout under ``--data-dir`` (``train_test_split.txt``: 1 trains, 0 is
evaluated) through the 'torch' backend.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixkit.data import create_loader, list_backends
from mixkit.data.classes import source_classes

__all__ = ["FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "DataSpec", "build_loaders",
           "count_classes", "eval_split_name", "progressive_size", "resolve_data_spec", "resolve_split",
           "timm_augment"]

# Per-channel statistics of Fashion-MNIST's 60,000 training images (0-1 scale).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
DATASETS = ("", "fashion_mnist", "placed_fashion_mnist", "cub")
_IN_MEMORY = ("fashion_mnist", "placed_fashion_mnist")

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
    """Number of classes of a training source: an ImageFolder split's class folders, or the classes a
    .beton's sidecar or a webdataset directory's index lists (None when it lists none)."""
    classes = source_classes(split_dir)
    return len(classes) if classes else None


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


def eval_split_name(dataset: str, val_split: str) -> str:
    """The split the evaluation numbers are on: 'test' for the built-in datasets, else the --val-split folder."""
    return "test" if dataset in DATASETS[1:] else val_split


def resolve_data_spec(args) -> DataSpec:
    """Checks the data arguments and finds the split sources, before any model or loader is built."""
    if args.dataset not in DATASETS:
        raise ValueError(f"unknown --dataset {args.dataset!r}: use '' (an ImageFolder under --data-dir), "
                         "'fashion_mnist', 'placed_fashion_mnist' or 'cub' (CUB-200-2011's layout under --data-dir)")
    if args.loader not in list_backends():
        raise ValueError(f"unknown --loader {args.loader!r}: choose one of {', '.join(list_backends())}")
    if args.dataset == "cub":
        from mixkit.datasets import read_cub

        if not args.data_dir:
            raise ValueError("--dataset cub needs --data-dir CUB_200_2011 (the folder with images.txt and images/)")
        if args.loader != "torch":
            raise ValueError("--dataset cub is read from CUB's own layout by the 'torch' loader: use --loader torch")
        records = read_cub(args.data_dir)
        root = records.root
        return DataSpec("cub", root, root if args.val_split else None, len(records.classes), 3)
    if args.dataset in _IN_MEMORY:
        from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT

        root = Path(args.data_dir) if args.data_dir else DEFAULT_FASHION_MNIST_ROOT
        files = [root / f"{s}-{k}-idx{d}-ubyte.gz" for s in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"Fashion-MNIST files missing: {', '.join(missing)}. Install Debian's package "
                                    "(apt-get install dataset-fashion-mnist, or `make install-demo-data`) or pass "
                                    "--data-dir <folder with the IDX .gz files>")
        if args.loader != "torch":
            raise ValueError(f"--dataset {args.dataset} is read into memory: use --loader torch (the default)")
        if args.dataset == "placed_fashion_mnist":
            from mixkit.datasets import PLACED_FASHION_MNIST_MEAN, PLACED_FASHION_MNIST_STD, PlacedConfig

            return DataSpec(args.dataset, root, root if args.val_split else None, 10, 1, PlacedConfig().canvas,
                            PLACED_FASHION_MNIST_MEAN, PLACED_FASHION_MNIST_STD)
        return DataSpec("fashion_mnist", root, root if args.val_split else None, 10, 1, 28,
                        FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    if not args.data_dir:
        raise ValueError("no data: pass --data-dir <ImageFolder root with train/ and val/> or "
                         "--dataset fashion_mnist")
    suffix = ".beton" if args.loader == "ffcv" else ""
    train = resolve_split(args.data_dir, args.train_split, suffix=suffix)
    val = resolve_split(args.data_dir, args.val_split, suffix=suffix) if args.val_split else None
    return DataSpec("", train, val, count_classes(train), 3)


def progressive_size(epoch: int, prog_res: Sequence[int] | None, default: int) -> int:
    """FFCV's progressive resizing: linear from min_res at start_ramp to max_res at end_ramp, to a multiple
    of 32 (``default`` when off)."""
    if not prog_res:
        return default
    lo, hi, start, end = prog_res
    res = float(np.interp(epoch, [start, end], [lo, hi]))
    return int(round(res / 32)) * 32


def timm_augment(args) -> dict[str, Any]:
    """The ``LoaderConfig.augment`` of timm's augmentation flags (train.py's names to create_transform's)."""
    return dict(auto_augment=args.aa, color_jitter=args.color_jitter, color_jitter_prob=args.color_jitter_prob,
                grayscale_prob=args.grayscale_prob, gaussian_blur_prob=args.gaussian_blur_prob,
                re_prob=args.reprob, re_mode=args.remode, re_count=args.recount)


def build_loaders(args, spec: DataSpec, *, img_size: int, mean: Sequence[float], std: Sequence[float],
                  crop_pct: float, interpolation: str, rank: int, world_size: int,
                  device: torch.device, eval_img_size: int | None = None,
                  with_eval: bool = True) -> tuple[Any, Any]:
    """The training and evaluation loaders of this rank (evaluation None when --val-split is '').

    The evaluation loader labels its samples by class name with the training loader's classes
    (``class_map``): a split that lacks a training class keeps the training labels, and one with a class
    the training data does not have is a ValueError naming it."""
    eval_img_size = eval_img_size or img_size
    eval_bs = args.validation_batch_size or args.batch_size
    if spec.dataset in _IN_MEMORY:
        from mixkit.datasets import FashionMNIST, PlacedFashionMNIST

        cls = PlacedFashionMNIST if spec.dataset == "placed_fashion_mnist" else FashionMNIST
        train_ds = cls(root=spec.train_source, train=True)
        shared = dict(device=device, mean=tuple(mean), std=tuple(std), rank=rank, world_size=world_size,
                      seed=args.seed, channels_last=args.channels_last, classes=FashionMNIST.classes)
        train = create_loader("memory", (train_ds.images, train_ds.labels), batch_size=args.batch_size,
                              is_training=True, img_size=img_size, hflip=args.hflip, augment=timm_augment(args),
                              aug_splits=args.aug_splits, **shared)
        val = None
        if spec.eval_source is not None and with_eval:
            test_ds = cls(root=spec.eval_source, train=False)
            val = create_loader("memory", (test_ds.images, test_ds.labels), batch_size=eval_bs,
                                is_training=False, img_size=eval_img_size, **shared)
        return train, val
    common = dict(num_workers=args.workers, device=device, channels_last=args.channels_last,
                  rank=rank, world_size=world_size, seed=args.seed, mean=tuple(mean), std=tuple(std),
                  crop_pct=crop_pct)
    extra = {}
    if args.loader == "torch":
        # Fresh workers every epoch: their seeds then come from the main process's RNG at the epoch start,
        # which a checkpoint restores, so a resumed epoch draws the same augmentation.
        extra = dict(persistent_workers=False, interpolation=interpolation or "bilinear", validate=args.validate)
    elif args.loader == "dali":
        extra = dict(validate=args.validate)  # used for ImageFolder sources, not tar shards
    train_source, eval_source = spec.train_source, spec.eval_source
    if spec.dataset == "cub":
        from mixkit.datasets import cub_index, read_cub

        records = read_cub(spec.train_source)
        train_source, eval_source = cub_index(records, True), cub_index(records, False) if eval_source else None
    train = create_loader(args.loader, train_source, batch_size=args.batch_size, is_training=True,
                          img_size=img_size, scale=tuple(args.scale), ratio=tuple(args.ratio), hflip=args.hflip,
                          augment=timm_augment(args), aug_splits=args.aug_splits, re_split=args.resplit,
                          **common, **extra)
    val = None
    if spec.eval_source is not None and with_eval:
        val = create_loader(args.loader, eval_source, batch_size=eval_bs, is_training=False,
                            img_size=eval_img_size, class_map=train.classes, **common, **extra)
    return train, val
