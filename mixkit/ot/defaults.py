"""Default settings of mixkit.ot's solvers: eps, iteration budget, tolerance and the epsilon-scaling options."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_ABSORB_EVERY", "DEFAULT_ANNEAL_FACTOR", "DEFAULT_CHECK_EVERY", "DEFAULT_DECAY", "DEFAULT_EPS",
           "DEFAULT_MAX_ITER", "DEFAULT_OMEGA", "DEFAULT_STAGE_ITERS", "DEFAULT_TOL", "MAX_CUDA_CHECKS",
           "SCALING_DEFAULTS"]

DEFAULT_EPS = 0.05
DEFAULT_MAX_ITER = 1000
DEFAULT_TOL = 1e-3
DEFAULT_OMEGA = 1.5
DEFAULT_ANNEAL_FACTOR = 64.0
DEFAULT_DECAY = 0.5
DEFAULT_STAGE_ITERS = 4
DEFAULT_ABSORB_EVERY = 100
# Convergence check period of the torch solver on the CPU (every check is cheap there) and of the
# fused kernel (checks cost it no sync).
DEFAULT_CHECK_EVERY = 10
# On CUDA every check of the torch solver is a host sync: at most this many checks per solve.
MAX_CUDA_CHECKS = 10
# The epsilon-scaling options shared by the torch solver and the fused kernel (check_every None: by device).
SCALING_DEFAULTS: dict[str, Any] = {
    "anneal_factor": DEFAULT_ANNEAL_FACTOR, "decay": DEFAULT_DECAY, "stage_iters": DEFAULT_STAGE_ITERS,
    "check_every": None, "absorb_every": DEFAULT_ABSORB_EVERY, "omega": DEFAULT_OMEGA,
}
