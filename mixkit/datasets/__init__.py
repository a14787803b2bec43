"""Offline datasets (no downloads): Debian's Fashion-MNIST."""

from .fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST, read_idx

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FashionMNIST",
    "read_idx",
]
