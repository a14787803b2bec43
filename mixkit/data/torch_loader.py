"""The 'torch' backend: torchvision ImageFolder, timm transforms and a torch DataLoader.

The embedded default: it needs nothing beyond mixkit's own dependencies and runs everywhere.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from timm.data import create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import Compose, RandomResizedCrop

from .aug_splits import SplitCollate
from .base import LoaderBase
from .config import LoaderConfig
from .imagefolder import DEFAULT_VALIDATE, ImageFolderIndex, load_rgb, scan_image_folder
from .sharding import ShardSampler, shard_indices

__all__ = ["TorchLoader"]


class _IndexedImageFolder(ImageFolder):
    # torchvision's ImageFolder on the classes and samples of mixkit's scan (which ignores hidden
    # entries, reads each file once and validated every file): torchvision does not walk the folder again.
    def __init__(self, index: ImageFolderIndex, **kwargs: Any) -> None:
        self._index = index
        super().__init__(str(index.root), loader=load_rgb, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self._index.classes), dict(self._index.class_to_idx)

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], *args: Any,
                     **kwargs: Any) -> list[tuple[str, int]]:
        return list(self._index.samples)


class _NonEmptyRandomResizedCrop(RandomResizedCropAndInterpolation):
    # timm's RandomResizedCropAndInterpolation (1.0.x) accepts a rounded crop side of 0 px, which tiny images
    # reach (a 1x1 image in about 1 draw in 4) and which then resizes to an all-black image. torchvision's
    # RandomResizedCrop draws from the same distribution with the `0 < side` condition; timm's crop keeps its
    # interpolation handling and uses torchvision's parameters.
    get_params = staticmethod(RandomResizedCrop.get_params)


def _with_non_empty_crops(transform: Compose) -> Compose:
    for t in transform.transforms:
        if type(t) is RandomResizedCropAndInterpolation:
            t.__class__ = _NonEmptyRandomResizedCrop
    return transform


class TorchLoader(LoaderBase):
    """ImageFolder loader on torch's DataLoader with timm's transforms.

    Training: RandomResizedCrop (``scale``, ``ratio``) + horizontal flip; evaluation: resize to
    ``img_size / crop_pct`` + centre crop. Both normalise with ``mean``/``std`` (timm's
    ``create_transform``, colour jitter off unless ``config.augment`` asks for it: timm's AutoAugment /
    RandAugment / AugMix, colour jitter, grayscale, blur and random erasing come from its keywords). Files
    are read with ``load_rgb`` (16-bit images scaled to 8 bits, as the other backends read them).

    Args:
        root: ImageFolder root, or an ``ImageFolderIndex`` already built (e.g. ``mixkit.datasets.cub_index``'s
            split of a CUB-200-2011 folder), which is read as it is.
        config: The shared options (``LoaderConfig``); ``num_workers`` are DataLoader worker processes.
        skip_corrupt: Skip bad files instead of raising (see ``scan_image_folder``).
        validate: How files are checked up front: 'full' (decoded once, verdicts cached), 'header' or 'none'
            (see ``scan_image_folder``).
        interpolation: timm interpolation name.
        persistent_workers: Keep the workers between epochs.
    """

    backend = "torch"
    applies_timm_augment = True

    def __init__(
            self,
            root: str | os.PathLike | ImageFolderIndex,
            config: LoaderConfig,
            *,
            skip_corrupt: bool = False,
            validate: str | bool = DEFAULT_VALIDATE,
            interpolation: str = "bilinear",
            persistent_workers: bool = True,
    ) -> None:
        index = root if isinstance(root, ImageFolderIndex) else scan_image_folder(
            root, validate=validate, skip_corrupt=skip_corrupt)
        super().__init__(config, classes=index.classes, skipped=index.skipped, source=str(index.root))
        c = config
        augment, collate = {"color_jitter": None, **c.augment}, None
        if c.aug_splits:
            # timm's split pipeline: create_transform's three stages for AugMixDataset, and the erasing moved to
            # the batch (as timm's prefetcher erases), so that --resplit can spare the clean split.
            from timm.data import AugMixDataset
            from timm.data.random_erasing import RandomErasing

            erasing = None
            if augment.get("re_prob"):
                erasing = RandomErasing(augment.pop("re_prob"), mode=augment.pop("re_mode", "pixel"),
                                        max_count=augment.pop("re_count", 1),
                                        num_splits=c.aug_splits if c.re_split else 0, device="cpu")
            stages = create_transform(
                c.img_size, is_training=True, scale=c.scale, ratio=c.ratio, hflip=c.hflip,
                interpolation=interpolation, mean=c.mean, std=c.std, separate=True, **augment)
            _with_non_empty_crops(stages[0])
            self.dataset = AugMixDataset(_IndexedImageFolder(index, transform=stages), num_splits=c.aug_splits)
            collate = SplitCollate(c.aug_splits, erasing)
        else:
            transform = _with_non_empty_crops(create_transform(
                c.img_size, is_training=c.is_training, scale=c.scale, ratio=c.ratio, hflip=c.hflip,
                interpolation=interpolation, mean=c.mean, std=c.std, crop_pct=c.crop_pct, **augment))
            self.dataset = _IndexedImageFolder(index, transform=transform)
        self.indices = shard_indices(len(index), rank=c.rank, world_size=c.world_size,
                                     seed=c.seed if c.is_training else None, equal_size=c.is_training)
        self._set_shard(len(self.indices), len(index))
        self.sampler = ShardSampler(self.indices, shuffle=c.is_training, seed=c.seed)
        self.loader = DataLoader(
            self.dataset, batch_size=c.batch_size, sampler=self.sampler, num_workers=c.num_workers,
            drop_last=c.drop_last, pin_memory=c.device.type == "cuda", collate_fn=collate,
            persistent_workers=persistent_workers and c.num_workers > 0)

    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch)
        yield from self.loader
