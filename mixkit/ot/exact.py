"""Exact (unregularised) optimal transport through POT's network simplex, the ground truth in tests."""

from __future__ import annotations

import numpy as np
import torch

from .checks import check_float_tensor
from .pot_solver import import_pot


def emd(cost: torch.Tensor) -> torch.Tensor:
    """Exact OT plans with uniform marginals, one ``ot.emd`` call per problem (fp64 on the host).

    Args:
        cost: Cost (B, n, m).

    Returns:
        Plans (B, n, m) in fp64 on the cost's device.
    """
    ot = import_pot()
    check_float_tensor(cost, "cost", 3)
    np_cost = cost.detach().to("cpu", torch.float64).numpy()
    B, n, m = np_cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    plans = np.stack([ot.emd(a, b, np.ascontiguousarray(c)) for c in np_cost])
    return torch.from_numpy(plans).to(cost.device)
