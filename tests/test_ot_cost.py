"""Cost matrices and their scaling, against POT's and the paper's cost and hand-made cases."""

import numpy as np
import ot
import pytest
import torch

from mixkit.ot import normalize_cost, squared_euclidean_cost
from mixkit.ot.cost import cost_scale
from mixkit.ot.reference import reference_cost


def test_cost_matches_pot_and_published_broadcast():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 7, 5, generator=g, dtype=torch.float64), torch.randn(3, 9, 5, generator=g, dtype=torch.float64)
    cost = squared_euclidean_cost(x, y)
    assert cost.shape == (3, 7, 9)
    for b in range(3):
        np.testing.assert_allclose(cost[b].numpy(), ot.dist(x[b].numpy(), y[b].numpy()), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cost, reference_cost(x, y))


def test_cost_is_fp32_under_bf16_autocast():
    x, y = torch.randn(2, 16, 64), torch.randn(2, 16, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = squared_euclidean_cost(x, y)
    assert cost.dtype == torch.float32
    torch.testing.assert_close(cost, reference_cost(x, y), rtol=1e-4, atol=1e-3)


def test_cost_of_identical_sets_has_zero_diagonal_and_is_nonnegative():
    x = torch.randn(2, 10, 32) * 1e3
    cost = squared_euclidean_cost(x, x)
    assert (cost >= 0).all()
    assert cost.diagonal(dim1=1, dim2=2).abs().max() <= 1e-3 * cost.max()


@pytest.mark.parametrize("scale", ["std", "max", "mean"])
def test_normalized_cost_is_invariant_to_feature_scale(scale):
    x, y = torch.randn(2, 8, 4, dtype=torch.float64), torch.randn(2, 8, 4, dtype=torch.float64)
    c1 = normalize_cost(squared_euclidean_cost(x, y), scale)
    c2 = normalize_cost(squared_euclidean_cost(1e3 * x, 1e3 * y), scale)
    torch.testing.assert_close(c1, c2)


def test_std_scale_ignores_row_and_column_offsets():
    """Only the double-centred part of the cost matters to a plan, so offsets must not change the scale."""
    cost = torch.rand(2, 6, 5, dtype=torch.float64)
    shifted = cost + torch.rand(2, 6, 1, dtype=torch.float64) * 100 + torch.rand(2, 1, 5, dtype=torch.float64) * 100
    torch.testing.assert_close(cost_scale(cost, "std"), cost_scale(shifted, "std"))
    # The normalised costs may differ by row and column offsets only, which no plan sees.
    def centred(c):
        return c - c.mean(dim=2, keepdim=True) - c.mean(dim=1, keepdim=True) + c.mean(dim=(1, 2), keepdim=True)

    torch.testing.assert_close(centred(normalize_cost(cost)), centred(normalize_cost(shifted)))


def test_std_scale_hand_computed():
    # Double-centred [[0, 2], [2, 0]] is [[-1, 1], [1, -1]]: std 1.
    cost = torch.tensor([[[0.0, 2.0], [2.0, 0.0]]])
    assert cost_scale(cost, "std").item() == pytest.approx(1.0)
    assert cost_scale(cost, "max").item() == pytest.approx(2.0)
    assert cost_scale(cost, "mean").item() == pytest.approx(1.0)
    assert normalize_cost(cost, "none") is cost


def test_constant_cost_keeps_a_finite_scale():
    cost = torch.zeros(1, 4, 4)
    assert torch.isfinite(normalize_cost(cost)).all()


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.randn(2, 4, 3), torch.randn(3, 4, 3), "batch sizes differ"),
        (torch.randn(2, 4, 3), torch.randn(2, 4, 5), "channel sizes differ"),
        (torch.randn(2, 0, 3), torch.randn(2, 4, 3), "empty"),
        (torch.full((1, 2, 3), float("nan")), torch.randn(1, 2, 3), "NaN or Inf"),
        (torch.randn(1, 2, 3), torch.full((1, 2, 3), float("inf")), "NaN or Inf"),
        (torch.ones(1, 2, 3, dtype=torch.int64), torch.randn(1, 2, 3), "integer"),
        (torch.randn(2, 3), torch.randn(2, 3), "3 dimensions"),
    ],
)
def test_bad_point_sets_are_rejected(x, y, match):
    with pytest.raises(ValueError, match=match):
        squared_euclidean_cost(x, y)


def test_unknown_scale_is_rejected():
    with pytest.raises(ValueError, match="unknown cost scale"):
        cost_scale(torch.rand(1, 2, 2), "median")
