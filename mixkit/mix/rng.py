"""The random draws of every mixing method, from NumPy's global generator.

NumPy's global generator on purpose (hence the noqa): timm's Mixup and timm train.py's ``random_seed()``
use it, so a run seeded the timm way (``np.random.seed``, plus ``torch.manual_seed`` for the model) is
repeatable with every method, and a checkpoint that saves NumPy's state resumes the draws exactly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["beta", "dirichlet", "permutation", "rand", "randint"]


def rand(size: int | None = None) -> float | np.ndarray:
    """Uniform [0, 1) draws."""
    return np.random.rand() if size is None else np.random.rand(size)  # noqa: NPY002


def beta(alpha: float, size: int | None = None) -> float | np.ndarray:
    """Beta(alpha, alpha) draws."""
    return np.random.beta(alpha, alpha, size=size)  # noqa: NPY002


def dirichlet(alpha: float, n: int) -> np.ndarray:
    """One Dirichlet(alpha, ..., alpha) draw over n weights."""
    return np.random.dirichlet(np.full(n, alpha))  # noqa: NPY002


def randint(high: int, size: tuple[int, ...] | None = None) -> int | np.ndarray:
    """A uniform int in [0, high), or an array of them of shape ``size``."""
    return int(np.random.randint(high)) if size is None else np.random.randint(0, high, size)  # noqa: NPY002


def permutation(n: int) -> np.ndarray:
    """A uniform permutation of range(n)."""
    return np.random.permutation(n)  # noqa: NPY002
