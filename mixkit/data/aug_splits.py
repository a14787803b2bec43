"""timm's augmentation splits (``--aug-splits``, for ``--jsd-loss`` and ``--split-bn``) in the 'torch' backend.

timm builds them from ``create_transform(..., separate=True)`` and its ``AugMixDataset`` (a clean view and
``n - 1`` augmented views of each sample), and its prefetcher's ``fast_collate`` lays a batch out split after
split with the labels repeated, then erases (``RandomErasing(num_splits=...)``, so ``--resplit`` spares the
clean split). mixkit's loader yields normalised float batches, not timm's uint8 prefetcher batches, so the
collate is written here: it stacks the views in fast_collate's order and applies timm's RandomErasing to the
batch the way the prefetcher does.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["SplitCollate"]


class SplitCollate:
    """Collates ``((view_0, ..., view_{n-1}), label)`` samples into ``(n * B images, n * B labels)``: split k is
    rows ``k*B .. (k+1)*B - 1`` (timm's ``fast_collate`` order, what ``JsdCrossEntropy`` and ``SplitBatchNorm2d``
    split by).

    Args:
        num_splits: Views per sample.
        erasing: timm's ``RandomErasing`` applied to the whole batch (None: no erasing).
    """

    def __init__(self, num_splits: int, erasing: Any = None) -> None:
        self.num_splits = num_splits
        self.erasing = erasing

    def __call__(self, batch: Sequence[tuple[Sequence[torch.Tensor], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if any(len(views) != self.num_splits for views, _ in batch):
            raise ValueError(f"SplitCollate expects {self.num_splits} views per sample (timm's AugMixDataset)")
        images = torch.cat([torch.stack([views[k] for views, _ in batch]) for k in range(self.num_splits)])
        labels = torch.tensor([label for _, label in batch], dtype=torch.int64).repeat(self.num_splits)
        if self.erasing is not None:
            images = self.erasing(images)
        return images, labels
