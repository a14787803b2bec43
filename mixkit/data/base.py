"""The contract shared by every loader backend.

A loader is an iterable of ``(images, labels)``: float32 NCHW images, normalised, on the target device
(channels-last memory when asked), and int64 labels of shape (N,). ``len()`` is the number of batches of
one epoch on this rank; every ``iter()`` is a new epoch, reshuffled in training; ``set_epoch`` selects the
epoch explicitly (as with DistributedSampler).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch

from .augment import check_aug_splits_supported, check_augment_supported
from .classes import label_map
from .config import LoaderConfig, resolve_device

__all__ = ["LoaderBase", "resolve_device"]


class LoaderBase(ABC):
    """Epoch bookkeeping, the shard-size check and the final device/layout step common to all backends.

    A backend calls ``super().__init__(config, ...)`` first and ``_set_shard(...)`` once it knows how many
    samples its rank reads.

    Args:
        config: The shared options (``LoaderConfig``); its fields are also readable as attributes of the
            loader (``loader.batch_size``, ``loader.rank``, ...).
        classes: The source's class names, in its own label order; with ``config.class_map`` the loader's
            ``classes`` become the map's and every label is translated by name (``mixkit.data.classes``).
        skipped: (path, reason) pairs of the bad files skipped under ``skip_corrupt``.
        channels: Channels of the images the backend yields (3 for the decoded RGB files); ``mean`` and
            ``std`` must have one value each.
        source: What the loader reads (its folder or file), named in errors.

    Raises:
        ValueError: ``config.class_map`` is given and the source has a class it does not hold, or names no
            classes at all.
    """

    backend: str = ""
    # Whether the backend applies LoaderConfig.augment (timm's transforms); the others refuse it.
    applies_timm_augment: bool = False

    def __init__(
            self,
            config: LoaderConfig,
            *,
            classes: Sequence[str] | None = None,
            skipped: Sequence[tuple[str, str]] = (),
            channels: int = 3,
            source: str = "",
    ) -> None:
        if not isinstance(config, LoaderConfig):
            raise TypeError(f"config must be a mixkit.data.LoaderConfig, got {type(config).__name__}.")
        if len(config.mean) != channels:
            raise ValueError(f"mean {config.mean} and std {config.std} have {len(config.mean)} value(s), but the "
                             f"{self.backend!r} backend yields {channels}-channel images: give one value per "
                             "channel.")
        if not self.applies_timm_augment:
            check_augment_supported(self.backend, config.augment)
            check_aug_splits_supported(self.backend, config.aug_splits)
        self.config = config
        self.classes = list(classes) if classes is not None else None
        self._label_map: torch.Tensor | None = None
        if config.class_map is not None:
            where = source or f"the {self.backend!r} loader's source"
            if self.classes is None:
                raise ValueError(f"{where} does not name its classes, so its labels cannot be matched to class_map "
                                 "by name: convert it again with `mixkit convert` (which records them), or pass "
                                 "class_map=None to take its labels as they are.")
            mapped = label_map(self.classes, config.class_map, source=where)
            self._label_map = None if mapped is None else torch.from_numpy(mapped)
            self.classes = list(config.class_map)
        self.skipped = list(skipped)
        self.epoch = 0
        self._shard_size: int | None = None

    def __getattr__(self, name: str):
        # The shared options read as loader attributes (loader.batch_size, loader.device, ...).
        config = self.__dict__.get("config")
        if config is not None and name in LoaderConfig.__dataclass_fields__:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _set_shard(self, shard_size: int, num_samples: int) -> None:
        """Records the samples of this rank's shard; a training loader that would yield nothing is an
        error here, at construction, rather than an empty epoch.

        Raises:
            ValueError: Training, and the shard is empty or (with drop_last) smaller than one batch.
        """
        c = self.config
        self._shard_size = int(shard_size)
        if not c.is_training:
            return
        where = (f"the {self.backend!r} training loader of rank {c.rank} of {c.world_size} would yield no "
                 "batch")
        if shard_size == 0:
            raise ValueError(f"{where}: the rank has no training sample ({num_samples} in all). Use at most "
                             f"{num_samples} ranks, or more data.")
        if c.drop_last and shard_size < c.batch_size:
            raise ValueError(f"{where}: its shard holds {shard_size} of {num_samples} samples, fewer than "
                             f"batch_size={c.batch_size}, and drop_last=True drops the incomplete batch. Use "
                             f"batch_size <= {shard_size}, fewer ranks or more data, or drop_last=False.")

    @property
    def num_skipped(self) -> int:
        """Number of bad files skipped under ``skip_corrupt``."""
        return len(self.skipped)

    @property
    def shard_size(self) -> int:
        """Samples in this rank's shard (before drop_last)."""
        if self._shard_size is None:
            raise RuntimeError(f"{type(self).__name__} did not call _set_shard in its __init__.")
        return self._shard_size

    def set_epoch(self, epoch: int) -> None:
        """Makes the next ``iter()`` run epoch ``epoch``; later ones continue from there."""
        self.epoch = epoch

    def __len__(self) -> int:
        n, b = self.shard_size, self.config.batch_size
        return n // b if self.config.drop_last else -(-n // b)

    @abstractmethod
    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Backend batches of one epoch: images NCHW float, labels of any integer dtype and shape (N,)
        or (N, 1)."""

    def _check_process_group(self) -> None:
        # A loader resolves its rank when it is built. Built before the process group started (at module
        # level of a Lightning script, before Accelerator()), every process would read the shard of rank 0
        # of 1 and train on duplicated data without a word: refuse that at the first batch instead.
        c = self.config
        if not (c.ranks_resolved and torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if (rank, world_size) != (c.rank, c.world_size):
            raise RuntimeError(
                f"this {self.backend!r} loader was built as rank {c.rank} of {c.world_size}, but it runs in rank {rank} "
                f"of {world_size} of the process group started since: every process would read the same shard. "
                "Create the loader after the process group starts (in LightningModule.train_dataloader() or "
                "LightningDataModule.setup(); after Accelerator() in an Accelerate script), or pass rank= and "
                "world_size= explicitly")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._check_process_group()
        epoch = self.epoch
        self.epoch += 1
        device = self.config.device
        fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        non_blocking = device.type == "cuda"
        label_map = None if self._label_map is None else self._label_map.to(device)
        for images, labels in self._iter_epoch(epoch):
            images = images.to(device, non_blocking=non_blocking).contiguous(memory_format=fmt)
            labels = labels.to(device, dtype=torch.int64, non_blocking=non_blocking).reshape(-1)
            if label_map is not None:  # the source's own labels to class_map's, by name
                labels = label_map[labels]
            yield images, labels

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}(batches={len(self)}, batch_size={c.batch_size}, "
                f"training={c.is_training}, device={c.device}, rank={c.rank}/{c.world_size})")
