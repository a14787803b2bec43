"""The epsilon-scaling schedule shared by the torch solver, the numba loop and the fused kernel: the eps
stages, each stage's iteration budget, and the convergence-check period."""

from __future__ import annotations

import math

import torch

from .defaults import DEFAULT_CHECK_EVERY, MAX_CUDA_CHECKS

__all__ = ["anneal_schedule", "default_check_every", "stage_budgets"]


def anneal_schedule(eps: float, anneal_factor: float, decay: float, max_iter: int | None = None) -> list[float]:
    """Geometric eps schedule from ``eps * anneal_factor`` down to ``eps`` (inclusive).

    Every stage costs at least one iteration (its log-domain re-anchoring), so with a ``max_iter``
    smaller than the number of stages the first (coarsest) stages are dropped: the budget holds.
    """
    if anneal_factor < 1:
        raise ValueError(f"anneal_factor must be >= 1 (1 disables annealing), got {anneal_factor}")
    if not 0 < decay < 1:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    n_stages = max(0, math.ceil(math.log(anneal_factor) / -math.log(decay) - 1e-9))
    schedule = [eps * max(1.0, anneal_factor * decay**k) for k in range(n_stages)] + [eps]
    return schedule if max_iter is None else schedule[max(0, len(schedule) - max_iter):]


def stage_budgets(n_stages: int, max_iter: int, stage_iters: int) -> list[int]:
    """Scaling iterations per stage; one log-domain update per stage counts too, and the sum is max_iter.

    Intermediate stages get ``stage_iters`` each (fewer if the budget is short); the last stage gets
    the rest. Shared by the torch solver and the fused kernel, which must spend the budget alike.
    """
    budgets, n_iter = [], 0
    for stage in range(n_stages):
        n_iter += 1
        if stage == n_stages - 1:
            budget = max_iter - n_iter
        else:
            budget = min(stage_iters, max_iter - n_iter - (n_stages - stage - 1))
        budgets.append(max(0, budget))
        n_iter += budgets[-1]
    return budgets


def default_check_every(device: torch.device | str, max_iter: int) -> int:
    """The torch solver's convergence check period: every 10 iterations on the CPU; on CUDA, where a
    check is a host sync, a multiple of 10 that keeps a solve under :data:`MAX_CUDA_CHECKS` checks."""
    if torch.device(device).type != "cuda":
        return DEFAULT_CHECK_EVERY
    per_check = math.ceil(max_iter / MAX_CUDA_CHECKS)
    return max(DEFAULT_CHECK_EVERY, DEFAULT_CHECK_EVERY * math.ceil(per_check / DEFAULT_CHECK_EVERY))
