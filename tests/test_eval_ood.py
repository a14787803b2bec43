"""OOD metrics and scores against independent references (scikit-learn, the papers' formulas, a hand case)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_ood")
sk = pytest.importorskip("sklearn.metrics")

from mixkit.eval.ood import energy_score, msp_score, ood_metrics  # noqa: E402


def test_metrics_match_sklearn():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, generator=g) + 1, torch.randn(200, generator=g)
    a[:20] = b[:20] = 0.5  # ties across the sets
    m = ood_metrics(a, b)
    y, s = np.r_[np.ones(300), np.zeros(200)], np.r_[a.numpy(), b.numpy()]
    assert m["auroc"] == pytest.approx(sk.roc_auc_score(y, s))
    # Trapezoidal AUPR (pytorch-ood) vs sklearn's step-wise average precision: close, not equal.
    assert m["aupr_in"] == pytest.approx(sk.average_precision_score(y, s), abs=2e-3)
    assert m["aupr_out"] == pytest.approx(sk.average_precision_score(1 - y, -s), abs=2e-3)
    fpr, tpr, _ = sk.roc_curve(y, s)
    assert m["fpr95"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])
    assert m["detection_error"] == pytest.approx((0.5 * (1 - tpr) + 0.5 * fpr).min())


def test_fpr95_hand_case():
    # 20 ID scores 1..20: accepting 95% (19) of them puts the threshold at 2; OOD scores >= 2 are accepted: 2 of 4.
    m = ood_metrics(torch.arange(1.0, 21.0), torch.tensor([0.0, 1.5, 2.0, 30.0]))
    assert m["fpr95"] == pytest.approx(0.5)


def test_scores_match_formulas():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    assert torch.allclose(msp_score(logits), logits.softmax(1).max(1).values)
    assert torch.allclose(energy_score(logits), torch.log(torch.exp(logits).sum(1)))


def test_ece_refuses_logits():
    from mixkit.eval import expected_calibration_error

    with pytest.raises(ValueError, match="softmax"):
        expected_calibration_error(torch.tensor([[4.0, -1.0], [0.2, 3.0]]), torch.tensor([0, 1]))
