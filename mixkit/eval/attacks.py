"""L-inf adversarial attacks in pixel space: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018).

Inputs are images in [0, 1]; the attacked model must take pixels and normalise inside
(``NormalizedModel``), so that epsilon is measured in pixels. Attacking normalised tensors with a pixel
epsilon (the common mistake) makes the attack 1/std times stronger than stated.

Written by hand: the two attacks are a few lines each, and the libraries that ship them either have
not been released since 2023 (torchattacks) or wrap models in their own framework with NumPy round
trips (adversarial-robustness-toolbox, foolbox); none is a dependency of timm or torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NormalizedModel", "default_pgd_step_size", "fgsm", "pgd"]


class NormalizedModel(nn.Module):
    """Wraps a model trained on normalised inputs so that it takes pixels in [0, 1].

    Args:
        model: The classifier.
        mean: Per-channel mean the model was trained with.
        std: Per-channel standard deviation the model was trained with.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected (B, {self.mean.shape[1]}, H, W) pixels, got shape {tuple(x.shape)}")
        return self.model((x - self.mean) / self.std)


def _check(x: torch.Tensor, eps: float) -> None:
    if eps < 0:
        raise ValueError(f"epsilon must be >= 0, got {eps}")
    if not x.is_floating_point():
        raise TypeError(f"the attacked images must be float pixels in [0, 1], got {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"the attacked images must be pixels in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                         "attack the unnormalised images and wrap the model in NormalizedModel")


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        # Summed, not averaged: each sample's gradient is its own loss's, whatever the batch size.
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method: one step of size eps along the sign of the loss gradient.

    Args:
        model: Classifier taking pixels in [0, 1] (put it in eval mode first).
        x: (B, C, H, W) pixels in [0, 1].
        y: (B,) true classes.
        eps: L-inf radius in pixel units (8/255 is a common choice).

    Returns:
        The adversarial images, clipped to [0, 1], detached.
    """
    _check(x, eps)
    return (x + eps * _input_grad(model, x, y).sign()).clamp_(0, 1).detach()


def default_pgd_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s rule of thumb: 2.5 * eps / steps, so the walk can reach the ball's surface."""
    return 2.5 * eps / steps


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent on the loss in the L-inf ball of radius eps around x.

    Args:
        model: Classifier taking pixels in [0, 1] (put it in eval mode first).
        x: (B, C, H, W) pixels in [0, 1].
        y: (B,) true classes.
        eps: L-inf radius in pixel units.
        steps: Gradient-sign steps.
        step_size: Size of each step; None: ``default_pgd_step_size(eps, steps)``.
        random_start: Start from a uniform point of the ball (Madry et al.), else from x.
        generator: Random generator of the start (on x's device), for repeatable attacks.

    Returns:
        The adversarial images of the last step, clipped to [0, 1], detached.
    """
    _check(x, eps)
    if steps < 1:
        raise ValueError(f"PGD needs at least one step, got steps={steps}")
    step_size = default_pgd_step_size(eps, steps) if step_size is None else step_size
    if step_size < 0:
        raise ValueError(f"step_size must be >= 0, got {step_size}")
    x = x.detach()
    adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        adv = (adv + (2 * noise - 1) * eps).clamp_(0, 1)
    for _ in range(steps):
        adv = adv + step_size * _input_grad(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp_(0, 1)
    return adv.detach()
