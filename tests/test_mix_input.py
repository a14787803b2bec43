"""Input-space methods ('mixup', 'cutmix', 'mixup_cutmix'): identical to timm's Mixup under one seed."""

# timm's Mixup draws from NumPy's global generator, so the tests seed exactly that one.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target

import mixkit
from mixkit.mix import AlignMixup, InputMixup, ManifoldMixup, create_mixup, list_mixups, register_mixup
from mixkit.mix.factory import accepted_arguments

NUM_CLASSES = 7

TIMM_KWARGS = {
    "mixup": dict(mixup_alpha=1.0, cutmix_alpha=0.0),
    "cutmix": dict(mixup_alpha=0.0, cutmix_alpha=1.0),
    "mixup_cutmix": dict(mixup_alpha=0.8, cutmix_alpha=1.0),
}


def _batch(batch_size: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, 16, 16, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)
    return x, y


@pytest.mark.parametrize("name", ["mixup", "cutmix", "mixup_cutmix"])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_identical_to_timm_mixup(name: str, mode: str) -> None:
    common = dict(prob=0.9, switch_prob=0.5, mode=mode, label_smoothing=0.1, num_classes=NUM_CLASSES)
    ours = create_mixup(name, **common)
    theirs = Mixup(**TIMM_KWARGS[name], **common)
    for step in range(5):  # several steps, so both lam draws and switch draws are compared
        x, y = _batch(seed=step)
        np.random.seed(step)
        xo, to = ours(x.clone(), y)
        np.random.seed(step)
        xt, tt = theirs(x.clone(), y)
        torch.testing.assert_close(xo, xt, rtol=0, atol=0)
        torch.testing.assert_close(to, tt, rtol=0, atol=0)


def test_cutmix_minmax_and_disabled_match_timm() -> None:
    common = dict(cutmix_minmax=(0.3, 0.8), label_smoothing=0.0, num_classes=NUM_CLASSES)
    ours, theirs = create_mixup("cutmix", **common), Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, **common)
    x, y = _batch()
    np.random.seed(3)
    xo, to = ours(x.clone(), y)
    np.random.seed(3)
    xt, tt = theirs(x.clone(), y)
    assert torch.equal(xo, xt) and torch.equal(to, tt)
    # The train loop's off switch: no mixing, but targets are still smoothed one-hots, as in timm.
    ours = create_mixup("mixup", num_classes=NUM_CLASSES, label_smoothing=0.2)
    ours.mixup_enabled = False
    xo, to = ours(x.clone(), y)
    assert torch.equal(xo, x)
    torch.testing.assert_close(to, mixup_target(y, NUM_CLASSES, 1.0, 0.2))


def test_soft_targets_sum_to_one_and_hand_mix() -> None:
    mix = create_mixup("mixup", num_classes=NUM_CLASSES, label_smoothing=0.1)
    x, y = _batch()
    np.random.seed(0)
    xm, t = mix(x.clone(), y)
    torch.testing.assert_close(t.sum(1), torch.ones(len(y)))
    # Recover lam from the targets of sample 0 and check the image mix by hand.
    np.random.seed(0)
    assert np.random.rand() < 1.0  # the prob draw
    lam = float(np.random.beta(1.0, 1.0))
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x.flip(0))


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_odd_batch_middle_sample_unmixed(mode: str, batch_size: int) -> None:
    mix = create_mixup("mixup_cutmix", mode=mode, num_classes=NUM_CLASSES, label_smoothing=0.0)
    for seed in range(4):
        x, y = _batch(batch_size, seed)
        np.random.seed(seed)
        xm, t = mix(x.clone(), y)
        mid = batch_size // 2
        assert t.shape == (batch_size, NUM_CLASSES)
        torch.testing.assert_close(t.sum(1), torch.ones(batch_size))
        torch.testing.assert_close(xm[mid], x[mid])
        assert t[mid, y[mid]] == 1.0
        if batch_size > 1:  # the outer pairs are timm's flip pairs: targets only mix the pair's labels
            for i in range(batch_size):
                support = {int(y[i]), int(y[batch_size - 1 - i])}
                assert set(torch.nonzero(t[i]).flatten().tolist()) <= support


def test_bad_inputs_have_clear_errors() -> None:
    mix = create_mixup("mixup", num_classes=NUM_CLASSES)
    x, y = _batch()
    with pytest.raises(ValueError, match=r"\[0, num_classes\)"):
        mix(x.clone(), torch.full_like(y, NUM_CLASSES))
    with pytest.raises(ValueError, match=r"\[0, num_classes\)"):
        mix(x.clone(), y - 10)
    with pytest.raises(TypeError, match="integer class indices"):
        mix(x.clone(), y.float())
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        mix(x.clone(), y[:, None])
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        mix(x.clone(), y[:-1])
    with pytest.raises(TypeError, match="floating-point"):
        mix((x * 100).to(torch.uint8), y)
    with pytest.raises(TypeError, match="torch.Tensor"):
        mix(x.clone(), y.tolist())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) image batch"):
        create_mixup("cutmix", num_classes=NUM_CLASSES)(x.flatten(1), y)


def test_factory_errors_and_registry() -> None:
    assert {"mixup", "cutmix", "mixup_cutmix", "manifold", "alignmixup"} <= set(list_mixups())
    with pytest.raises(ValueError, match="available: .*alignmixup"):
        create_mixup("mixupp")
    with pytest.raises(ValueError, match="does not take input_prob"):
        create_mixup("mixup", input_prob=0.5)
    with pytest.raises(ValueError, match="nothing to mix"):
        create_mixup("mixup", mixup_alpha=0.0)
    with pytest.raises(ValueError, match="mode"):
        create_mixup("mixup", mode="batches")
    with pytest.raises(ValueError, match="label_smoothing"):
        create_mixup("mixup", label_smoothing=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        create_mixup("mixup", num_classes=0)
    assert isinstance(create_mixup("cutmix"), Mixup)  # a timm Mixup: timm's train loop code applies as is
    assert mixkit.create_mixup is create_mixup and mixkit.InputMixup is InputMixup
    with create_mixup("mixup") as mix:  # every method is a context manager, the input ones included
        assert isinstance(mix, InputMixup)


def test_registry_rule_and_argument_check_over_the_class_hierarchy() -> None:
    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        register_mixup("mixup", InputMixup)
    register_mixup("mixup", InputMixup, overwrite=True, mixup_alpha=1.0, cutmix_alpha=0.0)
    assert "mixup" in list_mixups()
    # Subclasses forward **kwargs to their bases: the accepted names are the union along the MRO.
    assert {"layers", "input_prob", "projection", "mixup_alpha", "num_classes", "pairing", "correct_lam"} <= (
        accepted_arguments(AlignMixup)
    )
    assert "input_prob" not in accepted_arguments(ManifoldMixup)
    assert accepted_arguments(lambda model=None, **kw: None) is None  # a factory taking **kwargs: anything goes
    with pytest.raises(ValueError, match=r"does not take input_prob; it takes: .*layers.*mixup_alpha.*pairing"):
        create_mixup("manifold", input_prob=0.5)


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_random_pairing_mixes_with_the_drawn_permutation(mode: str) -> None:
    """pairing='random' (declared once in the base for every method): sample i mixes with x[partner[i]]."""
    mix = create_mixup("mixup", mode=mode, pairing="random", num_classes=NUM_CLASSES, label_smoothing=0.0)
    x, y = _batch()
    np.random.seed(5)
    xm, t = mix(x.clone(), y)
    draw = mix.last_draw
    perm = torch.from_numpy(draw.partner)
    assert sorted(perm.tolist()) == list(range(len(y)))
    lam = torch.as_tensor(draw.lam, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(len(y), 1, 1, 1)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
    onehot = torch.nn.functional.one_hot(y, NUM_CLASSES).float()
    torch.testing.assert_close(t, lam.reshape(-1, 1) * onehot + (1 - lam.reshape(-1, 1)) * onehot[perm])
    with pytest.raises(ValueError, match="mode 'pair'"):
        create_mixup("mixup", mode="pair", pairing="random")
