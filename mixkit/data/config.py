"""``LoaderConfig``: the options every loader backend shares, declared and validated in one place.

``create_loader`` builds one from its keywords (as timm's ``resolve_data_config`` feeds its factories)
and hands it to the backend; a backend takes the source, the configuration and its own options only.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .augment import as_augment
from .classes import as_class_map
from .sharding import env_int, resolve_rank

__all__ = ["LoaderConfig", "config_fields", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The target device: ``device``, or CUDA when available, else CPU.

    With CUDA and no device given, a process started by torchrun / ``accelerate launch`` (``LOCAL_RANK``
    set) gets ``cuda:LOCAL_RANK``, one GPU per process; otherwise the current CUDA device.

    Raises:
        ValueError: A CUDA device was asked for without CUDA, or ``LOCAL_RANK`` is not a GPU index.
    """
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local_rank = env_int("LOCAL_RANK", None)
        if local_rank is None:
            return torch.device("cuda", torch.cuda.current_device())
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} CUDA "
                             "device(s): start at most one process per GPU, or pass device=.")
        return torch.device("cuda", local_rank)
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} was asked for but CUDA is not available: pass device='cpu'.")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def _numbers(name: str, value, counts: tuple[int, ...]) -> tuple[float, ...]:
    # A sequence of real numbers, as a tuple of floats, of one of the lengths `counts`.
    try:
        values = tuple(value)
    except TypeError:
        values = None
    if values is None or len(values) not in counts or not all(isinstance(v, numbers.Real) for v in values):
        raise ValueError(f"{name} must be {' or '.join(map(str, counts))} numbers, got {value!r}.")
    return tuple(float(v) for v in values)


def _whole(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """Options shared by every loader backend, validated and resolved on construction.

    ``device``, ``drop_last``, ``rank`` and ``world_size`` are resolved when None (the resolved values
    are what the instance holds), so a config is complete once built.

    Args:
        batch_size: Samples per batch.
        is_training: Training mode (random crop, flip, shuffle, drop_last) or evaluation mode.
        img_size: Output side length.
        num_workers: Worker processes ('torch') or threads ('ffcv', 'dali').
        device: Target device; None: CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU.
        channels_last: Return images in channels-last memory format.
        drop_last: Drop the last incomplete batch; None: True for training, False for evaluation
            (evaluation must keep it to see every sample).
        rank: Global rank; None: from torch.distributed, Accelerate or the RANK variable.
        world_size: Number of processes; None: likewise (WORLD_SIZE).
        seed: Seed of the training shard partition and of the shuffles (the same on every rank).
        mean: Normalisation mean (0-1 scale), one value per channel of the backend's images (3 for RGB
            files, 1 for grayscale images in memory).
        std: Normalisation std (0-1 scale), as many values as ``mean``.
        crop_pct: Evaluation centre-crop fraction: resize to ``img_size / crop_pct``, crop ``img_size``.
        scale: RandomResizedCrop area range (training).
        ratio: RandomResizedCrop aspect-ratio range (training).
        hflip: Horizontal flip probability (training).
        class_map: Label samples by class name: the classes in label order (names, or timm's mapping of
            names to labels), e.g. the training loader's ``classes`` for an evaluation split, which may
            lack some of them; a class of the source that it does not hold is a ValueError. None: the
            source's own classes (``mixkit.data.classes``).
        augment: timm's extra training augmentation, ``timm.data.create_transform`` keywords
            (``mixkit.data.augment.AUGMENT_KEYS``: auto_augment, color_jitter, re_prob, ...); off values are
            dropped. Only the 'torch' backend applies them; the others refuse a non-empty one.
        aug_splits: timm's augmentation splits (``--aug-splits``, training only): 0 (off) or >= 2; each sample
            then yields a clean view and ``aug_splits - 1`` augmented ones (timm's AugMixDataset), batched split
            after split as timm's fast_collate lays them out, with the labels repeated. 'torch' backend only.
        re_split: timm's ``--resplit``: random erasing leaves the first (clean) split alone; needs ``aug_splits``.

    Raises:
        TypeError: A count that is not an int.
        ValueError: An option out of range, naming it and the accepted range.
    """

    batch_size: int
    is_training: bool
    img_size: int = 224
    num_workers: int = 2
    device: str | torch.device | None = None
    channels_last: bool = False
    drop_last: bool | None = None
    rank: int | None = None
    world_size: int | None = None
    seed: int = 0
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    crop_pct: float = 0.875
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    class_map: tuple[str, ...] | None = None
    augment: dict = field(default_factory=dict)
    aug_splits: int = 0
    re_split: bool = False
    # True when rank and world_size were resolved here rather than given: a loader then checks, when it
    # starts an epoch, that the process group has not changed under it (see LoaderBase.__iter__).
    ranks_resolved: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def put(name, value):  # frozen: resolved values are set once, here
            object.__setattr__(self, name, value)

        put("batch_size", _whole("batch_size", self.batch_size, 1))
        put("img_size", _whole("img_size", self.img_size, 1))
        put("num_workers", _whole("num_workers", self.num_workers, 0))
        put("seed", _whole("seed", self.seed, 0))
        put("is_training", bool(self.is_training))
        put("channels_last", bool(self.channels_last))
        put("drop_last", self.is_training if self.drop_last is None else bool(self.drop_last))
        put("ranks_resolved", self.rank is None or self.world_size is None)
        rank, world_size = resolve_rank(self.rank, self.world_size)
        put("rank", rank)
        put("world_size", world_size)
        put("device", resolve_device(self.device))
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}.")
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"hflip is a probability in [0, 1], got {self.hflip}.")
        put("mean", _numbers("mean", self.mean, (1, 3)))
        put("std", _numbers("std", self.std, (len(self.mean),)))
        if min(self.std) <= 0:
            raise ValueError(f"std must be > 0 per channel, got {self.std}.")
        put("scale", _numbers("scale", self.scale, (2,)))
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale is an area range with 0 < low <= high <= 1, got {self.scale}.")
        put("ratio", _numbers("ratio", self.ratio, (2,)))
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio is an aspect-ratio range with 0 < low <= high, got {self.ratio}.")
        if self.class_map is not None:
            put("class_map", as_class_map(self.class_map))
        put("augment", as_augment(self.augment) if self.is_training else {})
        splits = _whole("aug_splits", self.aug_splits, 0) if self.is_training else 0
        if splits == 1:
            raise ValueError("aug_splits is 0 (off) or >= 2 (a clean split and augmented ones), got 1.")
        put("aug_splits", splits)
        put("re_split", bool(self.re_split) and self.is_training)
        if self.re_split and not splits:
            raise ValueError("re_split (--resplit) keeps random erasing off the clean split of aug_splits: "
                             "set aug_splits >= 2 (--aug-splits), or drop it.")


def config_fields() -> frozenset[str]:
    """Names of the ``LoaderConfig`` options (the keywords ``create_loader`` routes to it)."""
    return frozenset(f.name for f in dataclasses.fields(LoaderConfig) if f.init)

