"""Shared data for the OT tests: real Fashion-MNIST deep features (trained once, then cached)."""

import functools

import torch

from mixkit.datasets import fashion_mnist_features


@functools.lru_cache(maxsize=1)
def real_features() -> torch.Tensor:
    """(128, 49, 128) post-ReLU feature maps of a CNN trained for 2 epochs on Fashion-MNIST."""
    return fashion_mnist_features(128, progress=False)
