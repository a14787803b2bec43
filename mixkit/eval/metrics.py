"""Classification metrics over a whole evaluation set: top-k accuracy, NLL and calibration.

``ClassificationMetrics`` accumulates per batch (``update(logits, target)``) and ``compute()``s at the
end, so a 50k-image validation set never has to sit in memory as logits. Calibration follows Guo et
al., "On Calibration of Modern Neural Networks" (ICML 2017): confidences (the top-1 softmax
probability) fall into ``n_bins`` equal-width bins ``((m-1)/M, m/M]``, and the expected calibration
error is ``sum_m |B_m|/N * |acc(B_m) - conf(B_m)|``.

The bins are counted here by hand rather than with torchmetrics' ``multiclass_calibration_error``
because torchmetrics bins are ``[lo, hi)`` and put a confidence of exactly 1.0 into a bin of its own
(``bucketize(right=True)`` over ``n_bins + 1`` boundaries). An fp32 softmax is exactly 1.0 once the top
logit leads the others by more than about 17, which confident networks reach, and splitting those
samples from the rest of the top bin changes the ECE. The reliability diagram also needs the per-bin accuracy and confidence, which torchmetrics does
not return. Away from bin edges both give the same number (tests/test_eval_metrics.py checks it
against torchmetrics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CalibrationBins", "ClassificationMetrics", "calibration_bins", "expected_calibration_error",
           "topk_correct"]

DEFAULT_BINS = 15
"""Equal-width confidence bins of the ECE (Guo et al. 2017)."""


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin statistics of top-1 confidences.

    Attributes:
        edges: (n_bins + 1,) bin edges from 0 to 1; bin m holds confidences in (edges[m], edges[m+1]]
            (bin 0 also holds a confidence of exactly 0).
        counts: (n_bins,) samples per bin.
        confidence: (n_bins,) mean confidence per bin (0 for empty bins).
        accuracy: (n_bins,) top-1 accuracy per bin (0 for empty bins).
    """

    edges: torch.Tensor
    counts: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())

    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean of |accuracy - confidence| over bins."""
        n = self.counts.sum()
        if n == 0:
            raise ValueError("the ECE of zero samples is undefined: no sample was evaluated")
        return float((self.counts / n * (self.accuracy - self.confidence).abs()).sum())

    def to_dict(self) -> dict[str, list[float]]:
        return {"edges": self.edges.tolist(), "counts": self.counts.long().tolist(),
                "confidence": self.confidence.tolist(), "accuracy": self.accuracy.tolist()}


def _bin_sums(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int) -> torch.Tensor:
    """(3, n_bins) fp64 sums: count, sum of confidences, number correct per bin (bins (lo, hi])."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = confidence.detach().double().flatten()
    # ceil(conf * M) - 1 is the index of the bin (lo, hi] holding conf; 0 goes to the first bin.
    index = (torch.ceil(conf * n_bins) - 1).clamp_(0, n_bins - 1).long()
    sums = torch.zeros(3, n_bins, dtype=torch.float64, device=conf.device)
    sums[0].index_add_(0, index, torch.ones_like(conf))
    sums[1].index_add_(0, index, conf)
    sums[2].index_add_(0, index, correct.detach().flatten().to(conf))
    return sums


def _bins_from_sums(sums: torch.Tensor) -> CalibrationBins:
    counts = sums[0].cpu()
    safe = counts.clamp_min(1)
    n_bins = counts.numel()
    return CalibrationBins(edges=torch.linspace(0, 1, n_bins + 1, dtype=torch.float64), counts=counts,
                          confidence=sums[1].cpu() / safe, accuracy=sums[2].cpu() / safe)


def _check_logits(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, num_classes), got shape {tuple(logits.shape)}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be (N,) class indices for {logits.shape[0]} logits, "
                         f"got shape {tuple(target.shape)}")
    if target.dtype.is_floating_point:
        raise TypeError(f"target must hold integer class indices, got {target.dtype}")


def _check_probabilities(probs: torch.Tensor) -> None:
    # Logits passed here gave an ECE of 450%: refuse anything whose rows are not distributions.
    p = probs.detach().double()
    tol = 1e-2 if probs.dtype in (torch.float16, torch.bfloat16) else 1e-4
    if p.numel() and (p.min() < -tol or p.max() > 1 + tol or not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]),
                                                                                  atol=tol * p.shape[1])):
        raise ValueError("probs must be class probabilities (each row in [0, 1], summing to 1); for logits pass "
                         "logits.softmax(dim=1), or use ClassificationMetrics, which takes logits")


def calibration_bins(probs: torch.Tensor, target: torch.Tensor, n_bins: int = DEFAULT_BINS) -> CalibrationBins:
    """Confidence bins of a set of predictions.

    Args:
        probs: (N, num_classes) class probabilities (softmax of the logits).
        target: (N,) true class indices.
        n_bins: Number of equal-width confidence bins.
    """
    _check_logits(probs, target)
    _check_probabilities(probs)
    confidence, prediction = probs.max(dim=1)
    return _bins_from_sums(_bin_sums(confidence, prediction.eq(target), n_bins))


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, n_bins: int = DEFAULT_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins (Guo et al. 2017) of (N, num_classes) probabilities."""
    return calibration_bins(probs, target, n_bins).ece()


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose true class is among the k highest logits, for each k (k capped at C)."""
    _check_logits(logits, target)
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(target[:, None])
    return {k: int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


class ClassificationMetrics:
    """Streaming top-1, top-5, NLL and calibration bins over batches of logits.

    Args:
        n_bins: Equal-width confidence bins of the ECE.
    """

    def __init__(self, *, n_bins: int = DEFAULT_BINS) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = n_bins
        self.count = 0
        self.correct = {1: 0, 5: 0}
        self.nll_sum = 0.0
        self._bins = torch.zeros(3, n_bins, dtype=torch.float64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Adds one batch of (N, num_classes) logits and (N,) class indices."""
        _check_logits(logits, target)
        logits = logits.detach().float()
        if not torch.isfinite(logits).all():
            raise ValueError("the model returned NaN or Inf logits; the weights or the input are broken")
        target = target.to(logits.device)
        for k, n in topk_correct(logits, target, tuple(self.correct)).items():
            self.correct[k] += n
        self.nll_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        confidence, prediction = logits.softmax(dim=1).max(dim=1)
        self._bins += _bin_sums(confidence, prediction.eq(target), self.n_bins).cpu()
        self.count += logits.shape[0]

    def bins(self) -> CalibrationBins:
        return _bins_from_sums(self._bins)

    def compute(self) -> dict[str, float | int]:
        """top1 and top5 (percent), nll (mean, nats), ece (fraction, 0-1) and the sample count."""
        if self.count == 0:
            raise ValueError("no sample was evaluated: the evaluation set is empty")
        return {"num_samples": self.count, "top1": 100.0 * self.correct[1] / self.count,
                "top5": 100.0 * self.correct[5] / self.count, "nll": self.nll_sum / self.count,
                "ece": self.bins().ece()}
