"""Sharding by global rank and world size, the same partition for every backend.

Each rank reads one fixed, disjoint shard: a contiguous block ``[n * r // w, n * (r + 1) // w)`` of the
sample order, the same bounds DALI's readers use for ``shard_id``/``num_shards``. For training the order is
a seeded permutation (the same on every rank), cut to a multiple of the world size so that every rank
yields the same number of batches (DDP would hang otherwise); each rank reshuffles its own shard every
epoch. For evaluation the order is the natural one and nothing is cut or padded, so the shards together
hold every sample exactly once. (DALI's file reader permutes the list once more with its own fixed seed
when it shuffles, so its training shards differ from these; see ``mixkit.data.dali_loader``.)
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ShardSampler", "env_int", "resolve_rank", "sample_order", "shard_bounds", "shard_indices"]


def env_int(name: str, default: int | None) -> int | None:
    """The launcher variable ``name`` (RANK, WORLD_SIZE, LOCAL_RANK) as a non-negative int, or ``default``
    when it is unset or empty.

    Raises:
        ValueError: The variable is set to something else than a non-negative integer; the message names it.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"environment variable {name}={os.environ[name]!r} is not a non-negative integer: "
                         "unset it or set it as torchrun does (or pass rank=/world_size=/device= "
                         "explicitly).")
    return number


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Returns the global (rank, world_size), defaulting to what the launcher reports.

    Defaults come from an initialised torch.distributed, else from an initialised Accelerate state,
    else from the RANK/WORLD_SIZE variables that torchrun and ``accelerate launch`` set, else (0, 1).

    Args:
        rank: Global rank, or None for the default.
        world_size: Number of processes, or None for the default.

    Raises:
        ValueError: The rank is outside ``[0, world_size)``.
    """
    d_rank, d_world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        d_rank, d_world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        state = _accelerate_state()
        if state is not None:
            d_rank, d_world = state
        else:
            d_rank = env_int("RANK", 0) if rank is None else rank
            d_world = env_int("WORLD_SIZE", 1) if world_size is None else world_size
    rank = d_rank if rank is None else _as_int("rank", rank)
    world_size = d_world if world_size is None else _as_int("world_size", world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} and world_size {world_size}: need world_size >= 1 and "
                         "0 <= rank < world_size (pass the global rank, not the local one).")
    return rank, world_size


def _as_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    return int(value)


def _accelerate_state() -> tuple[int, int] | None:
    # Only read a state that already exists: creating a PartialState would initialise a process group.
    try:
        from accelerate.state import PartialState
    except ImportError:
        return None
    if not PartialState._shared_state:
        return None
    state = PartialState()
    return state.process_index, state.num_processes


def shard_bounds(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """The [start, stop) block of rank ``rank``, as DALI's readers compute it."""
    return num_samples * rank // world_size, num_samples * (rank + 1) // world_size


def shard_indices(
        num_samples: int,
        *,
        rank: int,
        world_size: int,
        seed: int | None = None,
        equal_size: bool = False,
) -> np.ndarray:
    """Sample indices of one rank's shard.

    Args:
        num_samples: Dataset size.
        rank: Global rank.
        world_size: Number of ranks.
        seed: Shuffle the dataset with this seed before cutting it into shards (training); None keeps
            the natural order (evaluation).
        equal_size: Drop the last ``num_samples % world_size`` samples of the order first, so that all
            shards have the same size (training).

    Returns:
        int64 indices of the shard.
    """
    order = sample_order(num_samples, world_size=world_size, seed=seed, equal_size=equal_size)
    start, stop = shard_bounds(len(order), rank, world_size)
    return order[start:stop]


def sample_order(num_samples: int, *, world_size: int, seed: int | None = None,
                 equal_size: bool = False) -> np.ndarray:
    """The order that ``shard_indices`` cuts into shards (arguments as there); for readers such as DALI's
    that cut the shards themselves."""
    order = np.arange(num_samples, dtype=np.int64)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(order)
    if equal_size:
        order = order[: world_size * (num_samples // world_size)]
    return order


class ShardSampler(Sampler[int]):
    """Yields a fixed shard of indices, reshuffled every epoch when ``shuffle`` is set.

    Unlike torch's DistributedSampler it never pads a shard with duplicates, so evaluation sees every
    sample exactly once across ranks.

    Args:
        indices: The shard.
        shuffle: Permute the shard each epoch.
        seed: Base seed; epoch ``e`` uses ``seed + e``.
    """

    def __init__(self, indices: np.ndarray, *, shuffle: bool, seed: int = 0) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of the next pass."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = self.indices
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(order)
        return iter(order.tolist())

    def __len__(self) -> int:
        return len(self.indices)
