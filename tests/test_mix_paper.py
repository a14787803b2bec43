"""``alignmixup_paper`` against a re-statement of the AlignMixup authors' formulas.

The reference below is written from the published method (shashankvkt/AlignMixup_CVPR22: the
log-domain Sinkhorn of utils/OT.py, mixup_aligned of models/resnet18_classifier.py, mixup_criterion of
main.py), in this test's own words: the raw squared-distance cost, eps 0.1, at most 100 iterations with
the early stop on the batch mean of sum |du| < 0.1, the plan multiplied by the number of positions and
not row-normalised, every pair solved in one batched call, a random permutation as the pairing, and the
loss lam * CE(y_a) + (1 - lam) * CE(y_b) without smoothing. Everything runs in float64, so the
comparison holds to 1e-5 (in practice to about 1e-12).
"""

# The methods draw from NumPy's global generator, as timm's Mixup does, so the tests seed that one.
# ruff: noqa: NPY002

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from mixkit.mix import create_mixup

NUM_CLASSES = 5


def authors_plan(x: torch.Tensor, y: torch.Tensor, eps: float = 0.1, iters: int = 100, stop: float = 0.1) -> torch.Tensor:
    """Entropic plan between point sets x (B, n, C) and y (B, m, C) as the authors compute it."""
    cost = (x.unsqueeze(2) - y.unsqueeze(1)).pow(2).sum(-1)  # |x_i - y_j|^2 over channels
    log_a = math.log(1.0 / x.shape[1] + 1e-8)  # their uniform marginals carry a 1e-8 inside the log
    log_b = math.log(1.0 / y.shape[1] + 1e-8)
    f = x.new_zeros(x.shape[:2])
    g = y.new_zeros(y.shape[:2])

    def log_kernel(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (f.unsqueeze(2) + g.unsqueeze(1) - cost) / eps

    for _ in range(iters):
        f_before = f
        f = f + eps * (log_a - torch.logsumexp(log_kernel(f, g), dim=2))
        g = g + eps * (log_b - torch.logsumexp(log_kernel(f, g), dim=1))
        if float((f - f_before).abs().sum(1).mean()) < stop:  # one criterion for the whole batch
            break
    return log_kernel(f, g).exp()


def authors_mix(feats: torch.Tensor, perm: np.ndarray, lam: float, direction: str) -> torch.Tensor:
    """mixup_aligned on (B, C, H, W) features: A = sample maps, A' = partner maps, R = n * plan."""
    batch, channels = feats.shape[:2]
    n = feats.shape[2] * feats.shape[3]
    a = feats.reshape(batch, channels, n)
    a_partner = feats[torch.from_numpy(perm)].reshape(batch, channels, n)
    r = authors_plan(a.transpose(1, 2), a_partner.transpose(1, 2)) * n
    if direction == "to_a":  # A' R^T: the partner on the sample's positions
        out = lam * a + (1 - lam) * a_partner @ r.transpose(1, 2)
    else:  # A R: the sample on the partner's positions
        out = lam * (a @ r) + (1 - lam) * a_partner
    return out.reshape(feats.shape)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, NUM_CLASSES),
    ).double().train()


def _batch(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch_size)
    x = torch.randn(batch_size, 3, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)


@pytest.mark.parametrize("batch_size", [6, 7])
@pytest.mark.parametrize("direction", ["to_a", "to_b"])
def test_feature_branch_matches_the_authors_formulas(direction: str, batch_size: int) -> None:
    model = _model()
    x, y = _batch(batch_size)
    with torch.no_grad():
        feats = model[:3](x)
    with create_mixup("alignmixup_paper", model=model, layers="2", input_prob=0.0, direction=direction,
                      num_classes=NUM_CLASSES) as mix:
        np.random.seed(batch_size)
        _, target = mix(x, y)
        logits = model(x)
    perm, lam = mix.last_draw.partner, float(mix.last_draw.lam[0])
    assert sorted(perm) == list(range(batch_size)) and np.all(mix.last_draw.lam == lam)
    with torch.no_grad():
        expected_logits = model[3:](authors_mix(feats, perm, lam, direction))
    torch.testing.assert_close(logits.detach(), expected_logits, rtol=1e-5, atol=1e-5)
    # The authors' loss: lam * CE(y_a) + (1 - lam) * CE(y_b), no smoothing; the soft targets give it.
    loss = SoftTargetCrossEntropy()(logits, target)
    expected_loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)


def test_input_branch_uses_the_permutation() -> None:
    model = _model()
    x, y = _batch(6)
    with create_mixup("alignmixup_paper", model=model, layers="2", input_prob=1.0, num_classes=NUM_CLASSES) as mix:
        np.random.seed(0)
        x_in, target = mix(x, y)
    perm, lam = mix.last_draw.partner, float(mix.last_draw.lam[0])
    torch.testing.assert_close(x_in, lam * x + (1 - lam) * x[perm], rtol=1e-5, atol=1e-5)
    onehot = F.one_hot(y, NUM_CLASSES).float()
    torch.testing.assert_close(target, lam * onehot + (1 - lam) * onehot[perm])


def test_the_preset_differs_from_the_default_in_the_four_documented_places(resnet) -> None:
    kwargs = dict(model=resnet, num_classes=NUM_CLASSES)
    with create_mixup("alignmixup_paper", **kwargs) as paper, create_mixup("alignmixup", **kwargs) as ours:
        pass
    fields = ("solver", "projection", "pairing", "label_smoothing")
    assert [getattr(paper, f) for f in fields] == ["reference", "scaled_plan", "random", 0.0]
    assert [getattr(ours, f) for f in fields] == ["default", "barycentric", "flip", 0.1]
    shared = ("mixup_alpha", "input_prob", "direction", "mix_prob", "mode", "layers")
    assert [getattr(paper, f) for f in shared] == [getattr(ours, f) for f in shared]
