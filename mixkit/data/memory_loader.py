"""The 'memory' backend: batches from uint8 images already in memory (Fashion-MNIST's IDX arrays).

Reads no files, so it has none of the file backends' decoding or validation; sharding, epochs, the
shard-size check and the device/layout step are ``LoaderBase``'s, as for the other backends. Training
augmentation is the small-image recipe (CIFAR style): a random translation (zero padding by ``pad``
pixels, then a crop back to size) and a horizontal flip, drawn from a generator seeded by (seed, epoch,
rank), so an epoch's batches depend on nothing but those three numbers and exact resume needs no extra
state. Evaluation yields the images as they are, every sample once across ranks.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import LoaderBase
from .config import LoaderConfig
from .sharding import shard_indices

__all__ = ["MemoryLoader"]


class MemoryLoader(LoaderBase):
    """``create_loader("memory", (images, labels), batch_size=..., is_training=..., ...)``.

    ``img_size``, ``mean``/``std`` (one value per channel of the images), ``hflip``, ``seed``, ``rank``,
    ``world_size``, ``device`` and ``channels_last`` come from the shared ``LoaderConfig``; ``scale``,
    ``ratio``, ``crop_pct`` and ``num_workers`` do not apply (no crops, no workers).

    Args:
        source: ``(images, labels)``: uint8 images (N, H, W) or (N, C, H, W), and int64 labels (N,).
        config: The shared options.
        pad: Translation range in pixels (training); None: ``img_size // 14``.
        classes: Class names.
    """

    backend = "memory"

    def __init__(self, source: tuple[torch.Tensor, torch.Tensor], config: LoaderConfig, *,
                 pad: int | None = None, classes: Sequence[str] | None = None) -> None:
        if not (isinstance(source, tuple | list) and len(source) == 2
                and all(isinstance(t, torch.Tensor) for t in source)):
            raise TypeError("the 'memory' backend's source is (images, labels): a uint8 tensor (N, H, W) or "
                            f"(N, C, H, W) and an int64 tensor (N,); got {type(source).__name__}")
        images, labels = source
        images = images if images.ndim == 4 else images.unsqueeze(1)
        if images.ndim != 4 or images.dtype != torch.uint8 or labels.shape != (len(images),):
            raise ValueError(f"'memory' backend: images must be uint8 (N, H, W) or (N, C, H, W) with one label "
                             f"each, got images {images.dtype} {tuple(source[0].shape)} and labels "
                             f"{tuple(labels.shape)}")
        super().__init__(config, classes=classes, channels=images.shape[1], source="the 'memory' tensors")
        self.images, self.labels = images, labels
        self.pad = max(1, config.img_size // 14) if pad is None else int(pad)
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self._mean = torch.tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.indices = shard_indices(len(labels), rank=config.rank, world_size=config.world_size,
                                     seed=config.seed if config.is_training else None,
                                     equal_size=config.is_training)
        self._set_shard(len(self.indices), len(labels))

    def _prepare(self, idx: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
        size = self.config.img_size
        x = self.images[torch.from_numpy(idx)].float().div_(255.0)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if gen is not None:
            b, _, h, w = x.shape
            p = self.pad
            if p > 0:  # one gather: every image shifted by its own (dy, dx) inside the zero-padded batch
                padded = F.pad(x, (p, p, p, p))
                dy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
                dx = torch.randint(0, 2 * p + 1, (b,), generator=gen)
                bi = torch.arange(b)[:, None, None]
                ri = (dy[:, None] + torch.arange(h))[:, :, None]
                ci = (dx[:, None] + torch.arange(w))[:, None, :]
                # clone, not contiguous(): with one channel the permuted gather already counts as contiguous
                # but keeps channels-last strides (N, 1, 64, 64) -> (4096, 1, 64, 1), on which torch 2.14's CPU
                # convolution backward corrupts the heap (64 px crashes, 28 px does not).
                x = padded.permute(0, 2, 3, 1)[bi, ri, ci].permute(0, 3, 1, 2).clone(
                    memory_format=torch.contiguous_format)
            flip = torch.rand(b, generator=gen) < self.config.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return (x - self._mean) / self._std

    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        gen = None
        order = self.indices
        if c.is_training:
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([c.seed, epoch, c.rank])
                                                    .generate_state(1)[0]))
            order = order[torch.randperm(len(order), generator=gen).numpy()]
        for i in range(len(self)):
            idx = order[i * c.batch_size:(i + 1) * c.batch_size]
            yield self._prepare(idx, gen), self.labels[torch.from_numpy(idx)]
