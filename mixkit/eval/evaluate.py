"""One pass over an evaluation set: clean metrics on every sample, FGSM and PGD on the first ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .attacks import default_pgd_step_size, fgsm, pgd
from .metrics import DEFAULT_BINS, CalibrationBins, ClassificationMetrics

__all__ = ["AttackConfig", "EvalResult", "evaluate"]


@dataclass(frozen=True)
class AttackConfig:
    """L-inf attack settings, in pixel units of images in [0, 1].

    Attributes:
        eps: Radius of the L-inf ball (FGSM's step, PGD's ball).
        pgd_steps: PGD iterations.
        pgd_step_size: PGD step; None: 2.5 * eps / pgd_steps (Madry et al.).
        random_start: PGD starts from a uniform point of the ball.
        max_samples: Attack only the first this many samples of the set (None: all).
        seed: Seed of PGD's random start.
    """

    eps: float = 8 / 255
    pgd_steps: int = 10
    pgd_step_size: float | None = None
    random_start: bool = True
    max_samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.pgd_steps < 1:
            raise ValueError(f"pgd_steps must be >= 1, got {self.pgd_steps}")
        if self.pgd_step_size is not None and self.pgd_step_size < 0:
            raise ValueError(f"pgd_step_size must be >= 0, got {self.pgd_step_size}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 (or None for all), got {self.max_samples}")

    @property
    def step_size(self) -> float:
        return default_pgd_step_size(self.eps, self.pgd_steps) if self.pgd_step_size is None else self.pgd_step_size


@dataclass
class EvalResult:
    """What ``evaluate`` measured.

    Attributes:
        metrics: num_samples, top1, top5 (percent), nll (nats), ece (fraction).
        bins: Calibration bins for the reliability diagram.
        attacks: None without attacks; else the settings plus num_samples, clean_top1, fgsm_top1 and
            pgd_top1 (percent, on the attacked samples).
    """

    metrics: dict[str, float | int]
    bins: CalibrationBins
    attacks: dict[str, float | int | bool | None] | None

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "calibration": self.bins.to_dict(), "attacks": self.attacks}


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    attack: AttackConfig | None = None,
    n_bins: int = DEFAULT_BINS,
    device: str | torch.device = "cpu",
    progress: bool = False,
    total: int | None = None,
    desc: str = "eval",
) -> EvalResult:
    """Evaluates a pixel-space classifier: clean top-1/top-5/NLL/ECE, and FGSM / PGD robust accuracy.

    Args:
        model: Classifier taking pixels in [0, 1] (a ``NormalizedModel``); it is put in eval mode.
        batches: (images in [0, 1], class indices) batches, e.g. a DataLoader.
        attack: Attack settings; None skips the attacks.
        n_bins: Equal-width confidence bins of the ECE.
        device: Where the model runs.
        progress: Show a tqdm progress bar.
        total: Number of batches, for the progress bar.
        desc: Progress bar label.

    Returns:
        The metrics, the calibration bins and the attack results.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    model.eval()
    metrics = ClassificationMetrics(n_bins=n_bins)
    attacked = clean = fgsm_ok = pgd_ok = 0
    budget = None if attack is None else attack.max_samples
    generator = None
    if attack is not None:
        generator = torch.Generator(device=device).manual_seed(attack.seed)
    bar = tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress, leave=False)
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            metrics.update(model(x), y)
        if attack is None or (budget is not None and attacked >= budget):
            continue
        k = x.shape[0] if budget is None else min(x.shape[0], budget - attacked)
        xa, ya = x[:k], y[:k]
        with torch.no_grad():
            clean += int(model(xa).argmax(1).eq(ya).sum())
        adv = fgsm(model, xa, ya, attack.eps)
        with torch.no_grad():
            fgsm_ok += int(model(adv).argmax(1).eq(ya).sum())
        adv = pgd(model, xa, ya, attack.eps, steps=attack.pgd_steps, step_size=attack.step_size,
                  random_start=attack.random_start, generator=generator)
        with torch.no_grad():
            pgd_ok += int(model(adv).argmax(1).eq(ya).sum())
        attacked += k
        bar.set_postfix(fgsm=f"{100 * fgsm_ok / attacked:.1f}", pgd=f"{100 * pgd_ok / attacked:.1f}")
    result = metrics.compute()
    attacks = None
    if attack is not None:
        attacks = {**asdict(attack), "pgd_step_size": attack.step_size, "num_samples": attacked,
                   "clean_top1": 100.0 * clean / attacked, "fgsm_top1": 100.0 * fgsm_ok / attacked,
                   "pgd_top1": 100.0 * pgd_ok / attacked}
    return EvalResult(metrics=result, bins=metrics.bins(), attacks=attacks)
