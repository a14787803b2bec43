"""The decoder of AlignMixup/AE: a plain upsampling convolutional decoder from a feature map to the input.

Each block doubles the resolution (nearest-neighbour upsampling, to the exact size of the matching encoder
stage when the image size is given: 4 -> 7 -> 14 -> 28 for a 28 px input) and applies a 3x3 convolution,
BatchNorm and ReLU; a last 3x3 convolution gives the input's channels, with no activation (it reconstructs
the normalised input the model sees, which is not bounded). The default widths mirror the encoder's stages
(``mirrored_channels``). Written here because timm has encoders only, and a decoder this plain needs no
library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureDecoder", "mirrored_channels", "num_blocks"]


def num_blocks(reduction: int) -> int:
    """x2 upsampling blocks from a feature map at ``reduction`` back to the input: ceil(log2(reduction))."""
    return math.ceil(math.log2(reduction)) if reduction > 1 else 0


def mirrored_channels(in_channels: int, reduction: int, stages: Sequence[tuple[int, int]] = (), *,
                      min_channels: int = 4) -> tuple[int, ...]:
    """The default widths: each block half as wide as the encoder's stage at the resolution it outputs (the
    stage of the largest reduction not above it; timm's ``feature_info`` (reduction, channels) pairs), and
    never wider than half of the previous block. Without stages: half of the previous block's per block, at
    least ``min_channels``. Half the encoder's width: one convolution per block at a quarter of the cost of
    one encoder convolution at that resolution, so the decoder stays well below the encoder's cost
    (benchmarks/train.py measures it: AlignMixup/AE's target is 25% over AlignMixup per step); the full
    mirror cost 26% on the demo."""
    widths, width = [], in_channels
    for i in range(num_blocks(reduction)):
        out_reduction = reduction / 2 ** (i + 1)
        below = [c for r, c in stages if r <= out_reduction]
        mirror = (max(((r, c) for r, c in stages if r <= out_reduction))[1] if below
                  else min(stages)[1] if stages else None)
        half = max(width // 2, min(min_channels, in_channels))
        width = max(1, min(half, mirror // 2)) if mirror is not None else half
        widths.append(width)
    return tuple(widths)


class FeatureDecoder(nn.Module):
    """Decodes a (B, C, h, w) feature map into a (B, out_channels, H, W) image.

    Args:
        in_channels: Channels of the feature map.
        out_channels: Channels of the image (the model's input channels).
        reduction: How many input pixels one feature cell spans per side (timm's ``feature_info``
            ``reduction``); ceil(log2(reduction)) upsampling blocks.
        channels: Width of each block (one entry per block). None: ``mirrored_channels`` without stages.
    """

    def __init__(self, *, in_channels: int, out_channels: int, reduction: int,
                 channels: Sequence[int] | None = None) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got in_channels={in_channels}, out_channels={out_channels}")
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1 (input pixels per feature cell), got {reduction}")
        count = num_blocks(reduction)
        channels = mirrored_channels(in_channels, reduction) if channels is None else tuple(int(c) for c in channels)
        if len(channels) != count or any(c < 1 for c in channels):
            raise ValueError(
                f"decoder_channels must give {count} positive widths (one per x2 upsampling from reduction "
                f"{reduction}), got {list(channels)}"
            )
        blocks, width = [], in_channels
        for out in channels:
            blocks.append(nn.Sequential(nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                                        nn.ReLU(inplace=True)))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(width, out_channels, 3, padding=1)
        self.channels = channels

    def forward(self, features: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        """Decodes ``features``; ``size`` (H, W): the image size to return (None: x2 per block)."""
        x, count = features, len(self.blocks)
        for i, block in enumerate(self.blocks):
            if size is None:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            else:  # the encoder's sizes on the way back: ceil(side / 2^k), so the last block is at the input size
                x = F.interpolate(x, size=tuple(-(-int(s) // 2 ** (count - 1 - i)) for s in size), mode="nearest")
            x = block(x)
        image = self.head(x)
        if size is not None and tuple(image.shape[-2:]) != tuple(size):  # no blocks (reduction 1)
            image = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False)
        return image
