"""The 'ffcv' backend: FFCV's Loader on a .beton written by ``mixkit convert``.

This module imports ffcv; ``create_loader`` imports the module only when the backend is asked for, so
that mixkit works without ffcv.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from ffcv.fields import IntField, RGBImageField
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.reader import Reader
from ffcv.transforms import (
    NormalizeImage,
    RandomHorizontalFlip,
    Squeeze,
    ToDevice,
    ToTensor,
    ToTorchImage,
)

from .base import LoaderBase
from .convert import BETON_FIELDS, read_sidecar
from .ffcv_ops import NormalizeToCHW
from .sharding import shard_indices

__all__ = ["FfcvLoader", "check_beton"]

ORDERS = ("random", "quasi_random", "sequential")


def check_beton(path: str | os.PathLike) -> int:
    """Checks that ``path`` is a .beton with mixkit's schema and returns its number of samples.

    Raises:
        FileNotFoundError: No such file, or a directory (an ImageFolder needs converting first).
        ValueError: Not a .beton, or one with other fields.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is a directory; the ffcv backend reads a .beton: convert the "
                                f"ImageFolder first with `mixkit convert {path} OUT.beton`.")
    if not path.is_file():
        raise FileNotFoundError(f".beton file {str(path)!r} does not exist: write it with "
                                "`mixkit convert IMAGEFOLDER OUT.beton`.")
    try:
        reader = Reader(str(path))
    except Exception as e:  # ffcv fails with AssertionError/ValueError/IndexError on foreign files
        raise ValueError(f"{str(path)!r} is not a readable FFCV .beton ({type(e).__name__}: {e}); write it "
                         "with `mixkit convert IMAGEFOLDER OUT.beton`.") from e
    expected = {"image": RGBImageField, "label": IntField}
    found = {name: type(h).__name__ for name, h in reader.handlers.items()}
    if any(not isinstance(reader.handlers.get(name), cls) for name, cls in expected.items()):
        raise ValueError(f".beton {str(path)!r} has fields {found}; the ffcv backend needs {BETON_FIELDS} "
                         "(as written by `mixkit convert`).")
    return int(reader.num_samples)


class FfcvLoader(LoaderBase):
    """FFCV loader with the same augmentation as the torch backend.

    Training decodes with RandomResizedCropRGBImageDecoder and flips with RandomHorizontalFlip;
    evaluation decodes with CenterCropRGBImageDecoder (``ratio=crop_pct``). On CPU, normalisation runs
    before ToTensor (placed after ToTorchImage, ffcv's CPU graph never starts: upstream issue #396):
    ffcv's NormalizeImage for channels-last output, mixkit's ``NormalizeToCHW`` for NCHW output; on a
    GPU the uint8 batch goes to the device with ToDevice and is normalised there by torch, because ffcv's
    GPU NormalizeImage needs cupy, which mixkit does not depend on.

    Args:
        path: .beton written by ``mixkit convert``.
        batch_size: Samples per batch.
        is_training: Training or evaluation mode.
        img_size: Output side length.
        num_workers: ffcv decoding threads.
        device: Target device.
        channels_last: Return channels-last images (ffcv's native layout: no copy).
        drop_last: Drop the last incomplete batch.
        rank: Global rank.
        world_size: Number of processes.
        seed: Seed of the shard partition and of the per-epoch order.
        mean: Normalisation mean (0-1 scale).
        std: Normalisation std (0-1 scale).
        crop_pct: Evaluation centre-crop fraction.
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: Horizontal flip probability.
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
            order: str | None = None,
            os_cache: bool = True,
            batches_ahead: int = 3,
            copy: bool = False,
    ) -> None:
        num_samples = check_beton(path)
        meta = read_sidecar(path) or {}
        super().__init__(batch_size=batch_size, is_training=is_training, device=device,
                         channels_last=channels_last, drop_last=drop_last, rank=rank, world_size=world_size,
                         classes=meta.get("classes"), skipped=[tuple(s) for s in meta.get("skipped", [])])
        order = order or ("random" if is_training else "sequential")
        if order not in ORDERS:
            raise ValueError(f"order {order!r}: choose one of {ORDERS}.")
        self.copy = copy
        self.indices = shard_indices(num_samples, rank=rank, world_size=world_size,
                                     seed=seed if is_training else None, equal_size=is_training)
        if len(self.indices) == 0 and is_training:
            raise ValueError(f"rank {rank} of {world_size} has no training sample ({num_samples} in all).")

        if is_training:
            decoder = RandomResizedCropRGBImageDecoder((img_size, img_size), scale=tuple(scale),
                                                       ratio=tuple(ratio))
            image_ops = [decoder, RandomHorizontalFlip(flip_prob=hflip)]
        else:
            image_ops = [CenterCropRGBImageDecoder((img_size, img_size), ratio=crop_pct)]
        label_ops = [IntDecoder(), ToTensor(), Squeeze()]
        self._gpu_norm = None
        if device.type == "cuda":
            image_ops += [ToTensor(), ToDevice(device, non_blocking=True),
                          ToTorchImage(channels_last=True, convert_back_int16=False)]
            label_ops += [ToDevice(device, non_blocking=True)]
            self._gpu_norm = (torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255,
                              torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)
        else:
            mean255, std255 = np.array(mean) * 255, np.array(std) * 255
            if channels_last:  # ffcv's own HWC layout, seen as NCHW by ToTorchImage: no copy
                image_ops += [NormalizeImage(mean255, std255, np.float32), ToTensor(),
                              ToTorchImage(channels_last=True)]
            else:  # NCHW written directly by ffcv's parallel stage
                image_ops += [NormalizeToCHW(mean255, std255), ToTensor()]
        order_option = {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM,
                        "sequential": OrderOption.SEQUENTIAL}[order]
        # Sharding is done by handing each rank its own indices: ffcv's distributed=True would use
        # torch's DistributedSampler, which pads evaluation shards with duplicates.
        self.loader = Loader(str(path), batch_size=batch_size, num_workers=num_workers, os_cache=os_cache,
                             order=order_option, seed=seed, indices=self.indices, drop_last=drop_last,
                             batches_ahead=batches_ahead, pipelines={"image": image_ops, "label": label_ops})

    @property
    def shard_size(self) -> int:
        return len(self.indices)

    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.loader.next_epoch = epoch  # ffcv derives the epoch's order from seed and next_epoch
        for images, labels in self.loader:
            if self._gpu_norm is not None:
                mean, std = self._gpu_norm
                images = (images.float() - mean) / std  # a new tensor: no copy needed
            elif self.copy:
                images = images.clone(memory_format=torch.preserve_format)
            yield images, labels.clone()  # tiny, and often accumulated (metrics)
