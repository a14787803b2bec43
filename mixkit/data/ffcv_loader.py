"""The 'ffcv' backend: FFCV's Loader on a .beton written by ``mixkit convert``.

This module imports ffcv; ``create_loader`` imports the module only when the backend is asked for, so
that mixkit works without ffcv.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import (
    NormalizeImage,
    RandomHorizontalFlip,
    Squeeze,
    ToDevice,
    ToTensor,
    ToTorchImage,
)

from .base import LoaderBase
from .beton import BetonInfo, check_beton, ffcv_size_problem, read_sidecar
from .config import LoaderConfig
from .ffcv_ops import NormalizeToCHW
from .sharding import shard_indices

__all__ = ["FfcvLoader", "check_beton"]

ORDERS = {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM,
          "sequential": OrderOption.SEQUENTIAL}


def _check_decodable(info: BetonInfo, indices: np.ndarray, crop_pct: float) -> None:
    # FFCV's centre crop of int(crop_pct * shorter side) pixels is empty for tiny images, and an empty
    # crop aborts the process inside OpenCV: refuse such a file before the first batch.
    short = np.minimum(info.widths[indices], info.heights[indices])
    bad = indices[(crop_pct * short).astype(np.int64) < 1]
    if len(bad):
        i = int(bad[0])
        problem = ffcv_size_problem(int(info.widths[i]), int(info.heights[i]), crop_pct=crop_pct)
        raise ValueError(f".beton {str(info.path)!r}: {len(bad)} sample(s) (e.g. #{i}) cannot be decoded in "
                         f"evaluation: {problem}. Convert the ImageFolder again with `mixkit convert` (it "
                         "refuses or, with --skip-corrupt, skips such images), or raise crop_pct.")


class FfcvLoader(LoaderBase):
    """FFCV loader with the same augmentation as the torch backend.

    Training decodes with RandomResizedCropRGBImageDecoder and flips with RandomHorizontalFlip;
    evaluation decodes with CenterCropRGBImageDecoder (``ratio=crop_pct``). On CPU, normalisation runs
    before ToTensor (placed after ToTorchImage, ffcv's CPU graph never starts: upstream issue #396):
    ffcv's NormalizeImage for channels-last output, mixkit's ``NormalizeToCHW`` for NCHW output; on a
    GPU the uint8 batch goes to the device with ToDevice and is normalised there by torch, because ffcv's
    GPU NormalizeImage needs cupy, which mixkit does not depend on.

    The .beton is verified first (``check_beton``: an incomplete file is refused, never read), and in
    evaluation every image of the shard must give a non-empty centre crop.

    Args:
        path: .beton written by ``mixkit convert``.
        config: The shared options (``LoaderConfig``); ``num_workers`` are ffcv decoding threads, and
            ``channels_last`` is ffcv's native layout (no copy).
        order: 'random', 'quasi_random' (page-local shuffling for datasets larger than RAM, with
            ``os_cache=False``) or 'sequential'; None: 'random' for training, 'sequential' for evaluation.
        os_cache: Let the OS page cache hold the file (True) or let ffcv read pages itself (False).
        batches_ahead: Batches prepared in advance.
        copy: On CPU, copy each image batch out of ffcv's ring of reused buffers. By default (False,
            ffcv's own semantics) an image batch is a view into that ring and is overwritten once
            ``batches_ahead + 1`` further batches have been drawn: consume it (train on it) before
            then, or pass True to keep batches (a fresh 38 MB tensor per 64x3x224x224 batch costs about
            a quarter of ffcv's CPU throughput). Labels are always copied; CUDA batches are always new.
    """

    backend = "ffcv"

    def __init__(
            self,
            path: str | os.PathLike,
            config: LoaderConfig,
            *,
            order: str | None = None,
            os_cache: bool = True,
            batches_ahead: int = 3,
            copy: bool = False,
    ) -> None:
        c = config
        order = order or ("random" if c.is_training else "sequential")
        if order not in ORDERS:
            raise ValueError(f"order {order!r}: choose one of {tuple(ORDERS)}.")
        info = check_beton(path)
        meta = read_sidecar(path, info) or {}
        classes = meta.get("classes")
        if classes is not None and len(info.labels) and not 0 <= info.labels.min() <= info.labels.max() \
                < len(classes):
            raise ValueError(f".beton {str(path)!r} has labels outside its {len(classes)} classes: "
                             "convert it again.")
        super().__init__(config, classes=classes, skipped=[tuple(s) for s in meta.get("skipped", [])],
                         source=f".beton {str(path)!r}")
        self.copy = copy
        self.indices = shard_indices(info.num_samples, rank=c.rank, world_size=c.world_size,
                                     seed=c.seed if c.is_training else None, equal_size=c.is_training)
        self._set_shard(len(self.indices), info.num_samples)
        if not c.is_training:
            _check_decodable(info, self.indices, c.crop_pct)
        # Sharding is done by handing each rank its own indices: ffcv's distributed=True would use
        # torch's DistributedSampler, which pads evaluation shards with duplicates.
        self.loader = Loader(str(path), batch_size=c.batch_size, num_workers=c.num_workers, os_cache=os_cache,
                             order=ORDERS[order], seed=c.seed, indices=self.indices, drop_last=c.drop_last,
                             batches_ahead=batches_ahead, pipelines=self._pipelines())

    def _pipelines(self) -> dict[str, list]:
        c = self.config
        if c.is_training:
            decoder = RandomResizedCropRGBImageDecoder((c.img_size, c.img_size), scale=c.scale, ratio=c.ratio)
            image_ops = [decoder, RandomHorizontalFlip(flip_prob=c.hflip)]
        else:
            image_ops = [CenterCropRGBImageDecoder((c.img_size, c.img_size), ratio=c.crop_pct)]
        label_ops = [IntDecoder(), ToTensor(), Squeeze()]
        self._gpu_norm = None
        if c.device.type == "cuda":
            image_ops += [ToTensor(), ToDevice(c.device, non_blocking=True),
                          ToTorchImage(channels_last=True, convert_back_int16=False)]
            label_ops += [ToDevice(c.device, non_blocking=True)]
            self._gpu_norm = (torch.tensor(c.mean, device=c.device).view(1, 3, 1, 1) * 255,
                              torch.tensor(c.std, device=c.device).view(1, 3, 1, 1) * 255)
        else:
            mean255, std255 = np.array(c.mean) * 255, np.array(c.std) * 255
            if c.channels_last:  # ffcv's own HWC layout, seen as NCHW by ToTorchImage: no copy
                image_ops += [NormalizeImage(mean255, std255, np.float32), ToTensor(),
                              ToTorchImage(channels_last=True)]
            else:  # NCHW written directly by ffcv's parallel stage
                image_ops += [NormalizeToCHW(mean255, std255), ToTensor()]
        return {"image": image_ops, "label": label_ops}

    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.loader.next_epoch = epoch  # ffcv derives the epoch's order from seed and next_epoch
        for images, labels in self.loader:
            if self._gpu_norm is not None:
                mean, std = self._gpu_norm
                images = (images.float() - mean) / std  # a new tensor: no copy needed
            elif self.copy:
                images = images.clone(memory_format=torch.preserve_format)
            yield images, labels.clone()  # tiny, and often accumulated (metrics)
