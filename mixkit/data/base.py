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

__all__ = ["LoaderBase", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The target device: ``device``, or CUDA when available, else CPU.

    Raises:
        ValueError: A CUDA device was asked for without CUDA.
    """
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} was asked for but CUDA is not available: pass device='cpu'.")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


class LoaderBase(ABC):
    """Epoch bookkeeping and the final device/layout step common to all backends.

    Args:
        batch_size: Samples per batch.
        is_training: Training mode (random crop, flip, shuffle, drop_last) or evaluation mode.
        device: Target device.
        channels_last: Return images in channels-last memory format.
        drop_last: Drop the last incomplete batch.
        rank: Global rank of this process.
        world_size: Number of processes.
        classes: Class names; a label is an index into this list.
        skipped: (path, reason) pairs of the bad files skipped under ``skip_corrupt``.
    """

    backend: str = ""

    def __init__(
            self,
            *,
            batch_size: int,
            is_training: bool,
            device: torch.device,
            channels_last: bool,
            drop_last: bool,
            rank: int,
            world_size: int,
            classes: Sequence[str] | None = None,
            skipped: Sequence[tuple[str, str]] = (),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = batch_size
        self.is_training = is_training
        self.device = device
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.classes = list(classes) if classes is not None else None
        self.skipped = list(skipped)
        self.epoch = 0

    @property
    def num_skipped(self) -> int:
        """Number of bad files skipped under ``skip_corrupt``."""
        return len(self.skipped)

    @property
    @abstractmethod
    def shard_size(self) -> int:
        """Samples in this rank's shard (before drop_last)."""

    def set_epoch(self, epoch: int) -> None:
        """Makes the next ``iter()`` run epoch ``epoch``; later ones continue from there."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.shard_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @abstractmethod
    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Backend batches of one epoch: images NCHW float, labels of any integer dtype and shape (N,)
        or (N, 1)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        non_blocking = self.device.type == "cuda"
        for images, labels in self._iter_epoch(epoch):
            images = images.to(self.device, non_blocking=non_blocking).contiguous(memory_format=fmt)
            labels = labels.to(self.device, dtype=torch.int64, non_blocking=non_blocking).reshape(-1)
            yield images, labels

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(batches={len(self)}, batch_size={self.batch_size}, "
                f"training={self.is_training}, device={self.device}, rank={self.rank}/{self.world_size})")
