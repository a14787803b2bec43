"""FGSM and PGD (mixkit.eval.attacks) on a small CNN trained in the test on separable synthetic images."""

from __future__ import annotations

import pytest
import torch
from eval_fixtures import blob_data, train_blob_model
from torch import nn

from mixkit.eval import AttackConfig, NormalizedModel, evaluate, fgsm, pgd


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return train_blob_model()


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    return blob_data(256, seed=1)


def _batches(x: torch.Tensor, y: torch.Tensor, bs: int = 64):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.slow  # trains the module's small CNN (a few seconds)
def test_model_is_trained(model, test_set):
    assert _accuracy(model, *test_set) > 0.95


@pytest.mark.slow  # trains the module's small CNN (a few seconds)
def test_eps_zero_leaves_images_and_accuracy_unchanged(model, test_set):
    x, y = test_set
    assert torch.equal(fgsm(model, x, y, 0.0), x)
    # A positive step inside a ball of radius 0: the projection must bring every step back to x.
    assert torch.equal(pgd(model, x, y, 0.0, steps=3, step_size=0.1), x)
    result = evaluate(model, _batches(x, y), attack=AttackConfig(eps=0.0, pgd_steps=3, pgd_step_size=0.1))
    a = result.attacks
    assert a["num_samples"] == len(y)
    assert a["fgsm_top1"] == a["pgd_top1"] == a["clean_top1"] == pytest.approx(result.metrics["top1"])


@pytest.mark.slow  # trains the module's small CNN (a few seconds)
def test_attacks_lower_accuracy_and_pgd_is_at_most_fgsm(model, test_set):
    x, y = test_set
    result = evaluate(model, _batches(x, y), attack=AttackConfig(eps=0.2, pgd_steps=10))
    a = result.attacks
    assert a["clean_top1"] > 95
    assert a["fgsm_top1"] < a["clean_top1"] - 10
    assert a["pgd_top1"] <= a["fgsm_top1"]
    # max_samples attacks only the first images; the clean metrics still cover all of them.
    part = evaluate(model, _batches(x, y), attack=AttackConfig(eps=0.2, pgd_steps=2, max_samples=100))
    assert part.attacks["num_samples"] == 100 and part.metrics["num_samples"] == len(y)


@pytest.mark.slow  # trains the module's small CNN (a few seconds)
def test_adversarial_images_stay_in_the_ball_and_in_range(model, test_set):
    x, y = test_set
    eps = 0.1
    for adv in (fgsm(model, x, y, eps), pgd(model, x, y, eps, steps=5), pgd(model, x, y, eps, steps=5,
                                                                            random_start=False)):
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1


def test_pixel_epsilon_equals_normalised_epsilon_over_std():
    # The attack runs on pixels with normalisation inside the model, so a pixel eps moves the normalised
    # input by eps / std: the same as the sign step taken on the normalised tensor with eps / std.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    model = NormalizedModel(net, mean, std).eval()
    x = 0.3 + 0.4 * torch.rand(6, 3, 8, 8)  # interior: eps 0.01 never clips at 0 or 1
    y = torch.randint(0, 5, (6,))
    eps = 0.01
    adv = fgsm(model, x, y, eps)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    xn = ((x - m) / s).requires_grad_(True)
    loss = nn.functional.cross_entropy(net(xn), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, xn)
    expected = xn.detach() + eps / s * grad.sign()
    torch.testing.assert_close((adv - m) / s, expected, rtol=0, atol=1e-5)


def test_normalized_model_and_bad_input():
    net = nn.Identity()
    model = NormalizedModel(net, [0.5], [0.25])
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(model(x), (x - 0.5) / 0.25)
    with pytest.raises(ValueError, match="std must be positive"):
        NormalizedModel(net, [0.5], [0.0])
    with pytest.raises(ValueError, match="one value per channel"):
        NormalizedModel(net, [0.5, 0.5], [0.2])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.rand(2, 3, 4, 4))
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="NormalizedModel"):
        fgsm(model, x - 0.5, y, 0.1)  # normalised tensors passed as pixels
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        pgd(model, x, y, -0.1)
    with pytest.raises(ValueError, match="at least one step"):
        pgd(model, x, y, 0.1, steps=0)
    with pytest.raises(TypeError, match="float pixels"):
        fgsm(model, (x * 255).to(torch.uint8), y, 0.1)
    with pytest.raises(ValueError, match="pgd_steps"):
        AttackConfig(pgd_steps=0)
