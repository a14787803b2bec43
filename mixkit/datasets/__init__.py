"""Offline datasets and real deep features (no downloads)."""

from .deep_features import fashion_mnist_features, train_feature_net
from .fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST, read_idx

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FashionMNIST",
    "fashion_mnist_features",
    "read_idx",
    "train_feature_net",
]
