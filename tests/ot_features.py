"""Shared data for the OT tests: real Fashion-MNIST deep features (trained once, then cached).

The feature network is a fixture of the tests and benchmarks, not of the package: it lives in
benchmarks/deep_features.py, found here through the benchmarks folder on ``sys.path`` (as the
benchmark scripts find their helpers), so plain ``pytest`` from the repository root works.
"""

import functools
import sys
from pathlib import Path

import torch

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS_DIR) not in sys.path:
    sys.path.append(str(BENCHMARKS_DIR))  # last: never shadows an installed module

from deep_features import fashion_mnist_features  # noqa: E402  (needs the path above)


@functools.lru_cache(maxsize=1)
def real_features() -> torch.Tensor:
    """(128, 49, 128) post-ReLU feature maps of a CNN trained for 2 epochs on Fashion-MNIST."""
    return fashion_mnist_features(128, progress=False)
