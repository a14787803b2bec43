"""``create_loader``: one interface over the 'torch', 'ffcv' and 'dali' backends, looked up by name."""
from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .base import LoaderBase, resolve_device
from .sharding import resolve_rank

__all__ = ["create_loader", "list_backends", "register_backend"]

# Backend name -> "module:class", imported on first use so that ffcv and DALI stay optional.
_BACKENDS: dict[str, str] = {
    "torch": "mixkit.data.torch_loader:TorchLoader",
    "ffcv": "mixkit.data.ffcv_loader:FfcvLoader",
    "dali": "mixkit.data.dali_loader:DaliLoader",
}
_EXTRAS = {"ffcv": "pip install 'mixkit[ffcv]' (system packages: `make install-system`)",
           "dali": "pip install 'mixkit[dali]'"}


def register_backend(name: str, target: str) -> None:
    """Registers a backend class given as ``"module:class"``."""
    _BACKENDS[name] = target


def list_backends() -> list[str]:
    """Names accepted by ``create_loader``."""
    return sorted(_BACKENDS)


def _backend_class(name: str) -> type[LoaderBase]:
    if name not in _BACKENDS:
        raise ValueError(f"unknown loader backend {name!r}: choose one of {list_backends()}.")
    module, cls = _BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        hint = _EXTRAS.get(name, "install its dependencies")
        raise ImportError(f"loader backend {name!r} needs a package that is missing ({e}): {hint}.") from e


def create_loader(
        backend: str,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        batch_size: int,
        is_training: bool,
        img_size: int = 224,
        num_workers: int = 2,
        device: str | torch.device | None = None,
        channels_last: bool = False,
        drop_last: bool | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN,
        std: tuple[float, float, float] = IMAGENET_DEFAULT_STD,
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        **backend_kwargs: Any,
) -> LoaderBase:
    """Creates an image-classification loader.

    Every backend yields ``(images, labels)``: float32 NCHW images normalised with ``mean``/``std`` on
    ``device``, and int64 labels. Training applies RandomResizedCrop + horizontal flip and reshuffles
    every epoch; evaluation resizes to ``img_size / crop_pct`` and centre-crops. Each rank reads a fixed,
    disjoint shard; in evaluation the shards hold every sample exactly once (see ``mixkit.data.sharding``).

    Args:
        backend: 'torch', 'ffcv' or 'dali'.
        source: ImageFolder root ('torch', 'dali'); .beton from ``mixkit convert`` ('ffcv'); webdataset
            .tar shards ('dali').
        batch_size: Samples per batch.
        is_training: Training or evaluation mode.
        img_size: Output side length.
        num_workers: Worker processes ('torch') or threads ('ffcv', 'dali').
        device: Target device; None: CUDA when available, else CPU.
        channels_last: Return images in channels-last memory format.
        drop_last: Drop the last incomplete batch; None: True for training, False for evaluation
            (evaluation must keep it to see every sample).
        rank: Global rank; None: from torch.distributed, Accelerate or the RANK variable.
        world_size: Number of processes; None: likewise.
        seed: Seed of the training shard partition and of the shuffles (the same on every rank).
        mean: Normalisation mean (0-1 scale).
        std: Normalisation std (0-1 scale).
        crop_pct: Evaluation centre-crop fraction.
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: Horizontal flip probability (training).
        **backend_kwargs: Backend options, e.g. ``skip_corrupt`` ('torch', 'dali'), ``order`` and
            ``os_cache`` ('ffcv'); see each backend class.

    Raises:
        ValueError: Unknown backend or bad option.
        ImportError: The backend's optional package is missing.
    """
    cls = _backend_class(backend)
    rank, world_size = resolve_rank(rank, world_size)
    if drop_last is None:
        drop_last = is_training
    if img_size < 1:
        raise ValueError(f"img_size must be >= 1, got {img_size}.")
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")
    return cls(source, batch_size=batch_size, is_training=is_training, img_size=img_size,
               num_workers=num_workers, device=resolve_device(device), channels_last=channels_last,
               drop_last=drop_last, rank=rank, world_size=world_size, seed=seed, mean=tuple(mean),
               std=tuple(std), crop_pct=crop_pct, scale=tuple(scale), ratio=tuple(ratio), hflip=hflip,
               **backend_kwargs)
