"""Offline datasets (no downloads): Debian's Fashion-MNIST, Fashion-MNIST objects placed on cluttered canvases
with their boxes, and a reader of CUB-200-2011's layout."""

from .cub import CUB_FILES, CUBRecords, cub_index, read_cub
from .fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST, read_idx, write_idx
from .placed import PLACED_FASHION_MNIST_MEAN, PLACED_FASHION_MNIST_STD, PlacedConfig, PlacedFashionMNIST

__all__ = [
    "CUB_FILES",
    "DEFAULT_FASHION_MNIST_ROOT",
    "PLACED_FASHION_MNIST_MEAN",
    "PLACED_FASHION_MNIST_STD",
    "CUBRecords",
    "FashionMNIST",
    "PlacedConfig",
    "PlacedFashionMNIST",
    "cub_index",
    "read_cub",
    "read_idx",
    "write_idx",
]
