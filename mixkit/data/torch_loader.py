"""The 'torch' backend: torchvision ImageFolder, timm transforms and a torch DataLoader.

The embedded default: it needs nothing beyond mixkit's own dependencies and runs everywhere.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from timm.data import create_transform
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from .base import LoaderBase
from .imagefolder import ImageFolderIndex, scan_image_folder
from .sharding import ShardSampler, shard_indices

__all__ = ["TorchLoader"]


class _IndexedImageFolder(ImageFolder):
    # torchvision's ImageFolder with the classes of mixkit's scan (which ignores hidden folders).
    def __init__(self, index: ImageFolderIndex, **kwargs: Any) -> None:
        self._index = index
        good = {p for p, _ in index.samples}
        super().__init__(str(index.root), is_valid_file=good.__contains__, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self._index.classes), dict(self._index.class_to_idx)


class TorchLoader(LoaderBase):
    """ImageFolder loader on torch's DataLoader with timm's transforms.

    Training: RandomResizedCrop (``scale``, ``ratio``) + horizontal flip; evaluation: resize to
    ``img_size / crop_pct`` + centre crop. Both normalise with ``mean``/``std`` (timm's
    ``create_transform``, colour jitter off so that every backend applies the same augmentation).

    Args:
        root: ImageFolder root.
        batch_size: Samples per batch.
        is_training: Training or evaluation mode.
        img_size: Output side length.
        num_workers: DataLoader worker processes.
        device: Target device.
        channels_last: Return channels-last images.
        drop_last: Drop the last incomplete batch.
        rank: Global rank.
        world_size: Number of processes.
        seed: Seed of the shard partition and of the per-epoch shuffles.
        mean: Normalisation mean (0-1 scale).
        std: Normalisation std (0-1 scale).
        crop_pct: Evaluation centre-crop fraction.
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: Horizontal flip probability.
        skip_corrupt: Skip bad files instead of raising (see ``scan_image_folder``).
        validate: Decode every file once up front to find bad ones.
        interpolation: timm interpolation name.
        persistent_workers: Keep the workers between epochs.
    """

    backend = "torch"

    def __init__(
            self,
            root: str | os.PathLike,
            *,
            batch_size: int,
            is_training: bool,
            img_size: int,
            num_workers: int,
            device: torch.device,
            channels_last: bool,
            drop_last: bool,
            rank: int,
            world_size: int,
            seed: int,
            mean: tuple[float, float, float],
            std: tuple[float, float, float],
            crop_pct: float,
            scale: tuple[float, float],
            ratio: tuple[float, float],
            hflip: float,
            skip_corrupt: bool = False,
            validate: bool = True,
            interpolation: str = "bilinear",
            persistent_workers: bool = True,
    ) -> None:
        index = scan_image_folder(root, validate=validate, skip_corrupt=skip_corrupt)
        super().__init__(batch_size=batch_size, is_training=is_training, device=device,
                         channels_last=channels_last, drop_last=drop_last, rank=rank, world_size=world_size,
                         classes=index.classes, skipped=index.skipped)
        transform = create_transform(
            img_size, is_training=is_training, scale=scale, ratio=ratio, hflip=hflip, color_jitter=None,
            interpolation=interpolation, mean=mean, std=std, crop_pct=crop_pct)
        self.dataset = _IndexedImageFolder(index, transform=transform, allow_empty=False)
        if self.dataset.samples != index.samples:  # both walk in the same order; guard against drift
            raise RuntimeError("torchvision's ImageFolder and mixkit's scan disagree on the sample list.")
        self.indices = shard_indices(len(index), rank=rank, world_size=world_size,
                                     seed=seed if is_training else None, equal_size=is_training)
        self.sampler = ShardSampler(self.indices, shuffle=is_training, seed=seed)
        self.loader = DataLoader(
            self.dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
            drop_last=drop_last, pin_memory=device.type == "cuda",
            persistent_workers=persistent_workers and num_workers > 0)

    @property
    def shard_size(self) -> int:
        return len(self.indices)

    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch)
        yield from self.loader
