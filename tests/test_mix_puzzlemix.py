"""PuzzleMix: graph-cut masks checked against hand-computed cases, targets against the applied mask."""

import numpy as np
import pytest
import torch
from torch import nn

from mixkit.mix import create_mixup
from mixkit.mix.puzzlemix import graph_cut_mask


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 16 * 16, 10))


def test_graph_cut_keeps_the_salient_input_without_prior_or_smoothness():
    own = np.array([[1.0, 0.0], [0.0, 0.0]])
    other = np.array([[0.0, 0.0], [0.0, 1.0]])
    mask = graph_cut_mask(own, other, 0.5, n_labels=3, beta=0.0, eta=0.0)
    # Hand-computed: each block takes the level that loses the least saliency; ties (both zero) have any level.
    assert mask[0, 0] == 1.0 and mask[1, 1] == 0.0


def test_strong_smoothness_gives_a_uniform_mask():
    rng = np.random.default_rng(0)
    own, other = rng.random((4, 4)), rng.random((4, 4))
    mask = graph_cut_mask(own / own.sum(), other / other.sum(), 0.5, n_labels=3, beta=100.0, eta=0.0)
    assert np.unique(mask).size == 1


def test_targets_follow_the_applied_mask_and_odd_middle_is_unmixed():
    mix = create_mixup("puzzlemix", model=_model(), num_classes=10, block_num=4, label_smoothing=0.0)
    x, y = torch.randn(5, 3, 16, 16), torch.arange(5)
    while True:
        mixed, target = mix(x, y)
        if mix.last_draw.mixed:
            break
    masks = torch.from_numpy(mix.last_draw.masks)
    full = masks.repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
    flip = torch.arange(4, -1, -1)
    torch.testing.assert_close(mixed, full * x + (1 - full) * x[flip])
    own = masks.flatten(1).mean(1)
    torch.testing.assert_close(target[torch.arange(5), y], torch.where(flip == torch.arange(5), 1.0, own))
    torch.testing.assert_close(mixed[2], x[2])


def test_bad_input_errors_name_the_fix():
    with pytest.raises(ValueError, match="block_num <= 8"):
        create_mixup("puzzlemix", model=_model(), num_classes=10, block_num=16)(torch.randn(2, 3, 8, 8), torch.arange(2))
    with pytest.raises(ValueError, match="CutMix|cutmix"):
        create_mixup("puzzlemix", model=_model(), num_classes=10, cutmix_alpha=1.0)
    with pytest.raises(ValueError, match="mode='batch'"):
        create_mixup("puzzlemix", model=_model(), num_classes=10, mode="elem")
