"""mixkit.eval.metrics: ECE on hand-computed cases, top-k and NLL against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixkit.eval import ClassificationMetrics, calibration_bins, expected_calibration_error, topk_correct


def _probs(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_ece_two_bins_by_hand():
    # conf 0.9 twice (one right, one wrong): acc 0.5, gap 0.4; conf 0.6 twice (both right): gap 0.4.
    probs = _probs([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    target = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probs, target) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_ece_zero_when_accuracy_matches_confidence():
    # Ten predictions at confidence 0.7, seven of them right: perfectly calibrated.
    probs = _probs([[0.7, 0.3]] * 10)
    target = torch.tensor([0] * 7 + [1] * 3)
    assert expected_calibration_error(probs, target) == pytest.approx(0.0, abs=1e-12)


def test_ece_confidence_one_shares_the_top_bin():
    # Guo et al.'s bins are (lo, hi]: 1.0 and 0.95 both fall in (14/15, 1]. Mean confidence 0.975,
    # accuracy 0.5 -> ECE 0.475. (A separate bin for exactly 1.0, as torchmetrics uses, gives 0.525.)
    probs = _probs([[1.0, 0.0], [0.95, 0.05]])
    target = torch.tensor([1, 0])
    bins = calibration_bins(probs, target)
    assert bins.counts[-1] == 2 and bins.counts[:-1].sum() == 0
    assert bins.confidence[-1] == pytest.approx(0.975)
    assert bins.accuracy[-1] == pytest.approx(0.5)
    assert bins.ece() == pytest.approx(0.475)


def test_bins_are_right_closed_at_inner_edges():
    # 0.5 is the upper edge of bin 7 of 15 ((7/15, 8/15] holds 0.5); 1/3 is exactly the edge 5/15.
    bins = calibration_bins(_probs([[0.5, 0.5]]), torch.tensor([0]))
    assert int(bins.counts.argmax()) == 7  # (0.4667, 0.5333]
    three = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    assert int(calibration_bins(three, torch.tensor([0])).counts.argmax()) == 4  # (4/15, 5/15]


def test_ece_matches_a_restatement_with_other_bin_counts():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=g) * 3
    target = torch.randint(0, 7, (500,), generator=g)
    probs = logits.softmax(1).double()
    conf, pred = probs.max(1)
    correct = pred.eq(target).double()
    for n_bins in (1, 5, 15):
        ece = 0.0
        for m in range(n_bins):
            lo, hi = m / n_bins, (m + 1) / n_bins
            inside = (conf > lo) & (conf <= hi)
            if inside.any():
                ece += inside.double().mean() * (correct[inside].mean() - conf[inside].mean()).abs()
        assert expected_calibration_error(probs, target, n_bins) == pytest.approx(float(ece), abs=1e-12)


def test_ece_agrees_with_torchmetrics_away_from_bin_edges():
    tm = pytest.importorskip("torchmetrics.functional.classification")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2000, 10, generator=g) * 2
    target = torch.randint(0, 10, (2000,), generator=g)
    probs = logits.softmax(1)
    assert probs.max() < 1.0  # no confidence on an edge, where the two binnings differ
    ref = tm.multiclass_calibration_error(probs, target, num_classes=10, n_bins=15, norm="l1")
    assert expected_calibration_error(probs, target) == pytest.approx(float(ref), abs=1e-5)


def test_streaming_metrics_equal_one_shot():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(300, 10, generator=g) * 2
    target = torch.randint(0, 10, (300,), generator=g)
    m = ClassificationMetrics()
    for i in range(0, 300, 64):
        m.update(logits[i:i + 64], target[i:i + 64])
    out = m.compute()
    assert out["num_samples"] == 300
    assert out["top1"] == pytest.approx(100 * float((logits.argmax(1) == target).double().mean()))
    top5 = logits.topk(5, 1).indices.eq(target[:, None]).any(1).double().mean()
    assert out["top5"] == pytest.approx(100 * float(top5))
    assert out["nll"] == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-5)
    assert out["ece"] == pytest.approx(expected_calibration_error(logits.softmax(1), target), abs=1e-6)


def test_topk_by_hand():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [2.0, 3.0, 1.0]])
    target = torch.tensor([0, 1, 2])
    # Row 0: top-1 right. Row 1: class 1 is second. Row 2: class 2 is third. k=5 is capped at 3 classes.
    assert topk_correct(logits, target, (1, 2, 5)) == {1: 1, 2: 2, 5: 3}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no sample"):
        ClassificationMetrics().compute()
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        ClassificationMetrics().update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        ClassificationMetrics().update(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        ClassificationMetrics().update(torch.full((2, 3), float("nan")), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="n_bins"):
        ClassificationMetrics(n_bins=0)
