"""The contract every mixkit.ot solver keeps: defaults, diagnostics, the eps schedule, input checks.

One module so that the solvers (torch, triton, pot, reference) share one definition of each rule.
Inputs are validated once, at the public entry points (:func:`mixkit.ot.transport_plan`,
:func:`mixkit.ot.align`, :class:`mixkit.ot.Solver` and the ``sinkhorn_*`` functions, which
:func:`solver_entry` wraps); the kernels below them run unchecked.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

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


class SolverInfo(NamedTuple):
    """Diagnostics of one solve.

    Attributes:
        n_iter: Scaling iterations run, annealing stages included (the batch's largest count).
        marginal_error: Largest :func:`mixkit.ot.marginal_error` (rows plus columns, L1) over the
            batch, a 0-dim tensor so CUDA callers are not forced to synchronise.
        solver: Name of the solver that produced the plan ('torch', 'numba', 'triton', 'pot', 'reference'):
            for the 'default' solver, the one it chose or fell back to.
        converged: Whether the solver's own stopping test passed within ``max_iter``.
        n_iter_per_problem: (B,) int32 iterations per problem where the solver stops each problem on
            its own (the torch solver and the fused kernel), else None.
    """

    n_iter: int
    marginal_error: torch.Tensor
    solver: str = ""
    converged: bool = True
    n_iter_per_problem: torch.Tensor | None = None


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


def warn_not_converged(solver: str, error: float, tol: float, n_iter: int, *, stacklevel: int = 4) -> None:
    """Warns that a plan is not a coupling to ``tol``; ``stacklevel`` 4 names the caller of a solver's public
    function when the solver's own body calls this (one more per helper in between)."""
    warnings.warn(
        f"{solver} OT solver did not converge: marginal error {error:.3g} > tol {tol:g} after {n_iter} "
        "iterations; the plan is not a coupling to that tolerance. Raise max_iter or eps (a too small eps "
        "needs many iterations), or pass return_info=True to read SolverInfo.converged instead",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


# ---------------------------------------------------------------------------------------------- checks


def check_finite(t: torch.Tensor, message: str) -> None:
    """Raise if t has NaN/Inf: one host sync, so call it once per tensor.

    Reads the largest magnitude, which NaN and Inf propagate to: two ops (abs, amax) where
    ``isfinite(t).all()`` dispatches five, which counts on CUDA where each op is a launch.
    """
    with torch.no_grad():
        if t.numel() and not math.isfinite(float(t.abs().amax())):
            raise ValueError(message)


def check_float_tensor(t: torch.Tensor, name: str, ndim: int, *, finite: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} has integer/bool dtype {t.dtype}; convert it with {name}.float()")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): every set needs at least one point")
    if t.is_meta:
        raise ValueError(f"{name} is on the meta device (shapes only, no data), so no plan can be computed; "
                         "move it to a real device (e.g. .to('cuda')) or materialise it")
    if finite:
        check_finite(t, f"{name} contains NaN or Inf; check the features (e.g. an fp16 overflow upstream)")


def check_point_sets(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("x", "y")) -> None:
    """Check two batched point sets (B, n, C) and (B, m, C): shapes, dtypes, devices (no NaN scan: the
    cost built from them is checked instead, once)."""
    na, nb = names
    check_float_tensor(a, na, 3, finite=False)
    check_float_tensor(b, nb, 3, finite=False)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"batch sizes differ: {na} has {a.shape[0]} sets, {nb} has {b.shape[0]}")
    if a.shape[2] != b.shape[2]:
        raise ValueError(
            f"channel sizes differ: {na} has {a.shape[2]} channels, {nb} has {b.shape[2]}; "
            "both sets must live in the same feature space"
        )
    if a.device != b.device:
        raise ValueError(f"{na} is on {a.device} but {nb} is on {b.device}; move both to one device")


def _scalar(value: Any, name: str, kind: type) -> Any:
    """A Python number from a real number of any flavour (int, float, numpy scalar, 0-d tensor)."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number or a 0-d real tensor, got a tensor of shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}")
        if kind is numbers.Integral and value.is_floating_point():
            raise TypeError(f"{name} must be an integer, got a {value.dtype} tensor")
        return value.item()  # one host sync for a CUDA tensor: pass Python numbers in a training loop
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if kind is numbers.Integral else "a real number"
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    return int(value) if kind is numbers.Integral else float(value)


def check_solver_args(eps: Any, max_iter: Any, tol: Any) -> tuple[float, int, float]:
    """Validate the three arguments every solver takes; returns them as Python float, int, float.

    Raises:
        TypeError: One is not a real number (``max_iter``: an integer); numpy scalars and 0-d tensors are fine.
        ValueError: ``eps <= 0`` or not finite, ``max_iter < 1``, ``tol < 0``.
    """
    eps, max_iter, tol = _scalar(eps, "eps", numbers.Real), _scalar(max_iter, "max_iter", numbers.Integral), \
        _scalar(tol, "tol", numbers.Real)
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0 (the entropic regularisation), got {eps!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    return eps, max_iter, tol


def check_scaling_options(anneal_factor: float, decay: float, stage_iters: int, check_every: int | None,
                          absorb_every: int, omega: float, **_: Any) -> None:
    """Options of the epsilon-scaling solvers (torch and the fused kernel)."""
    anneal_schedule(1.0, anneal_factor, decay)  # raises on a bad anneal_factor or decay
    if absorb_every < 1 or (check_every is not None and check_every < 1) or stage_iters < 0:
        raise ValueError(
            "absorb_every and check_every must be >= 1 and stage_iters >= 0, "
            f"got {absorb_every}, {check_every}, {stage_iters}"
        )
    if not 1 <= omega < 2:
        raise ValueError(f"omega (over-relaxation) must be in [1, 2), got {omega}")


def keyword_options_check(solver: str) -> Callable[..., None]:
    """The options check of a solver that takes the epsilon-scaling options and ``warn`` as ``**options``
    (the fused kernels and the default solver): unknown names raise a TypeError listing the known ones."""

    def check(options: dict[str, Any], **_: Any) -> None:
        unknown = sorted(set(options) - set(SCALING_DEFAULTS) - {"warn"})
        if unknown:
            raise TypeError(f"{solver} got unknown options {unknown}; it takes {sorted(SCALING_DEFAULTS)} and warn")
        check_scaling_options(**{**SCALING_DEFAULTS, **options})

    return check


def solver_entry(check_options: Callable[..., None] | None = None):
    """Make a solver kernel ``fn(cost, eps, max_iter, tol, **options)`` a checked public function.

    The wrapper validates the cost (a finite float (B, n, m) tensor: one host sync), the three shared
    arguments (normalised to Python numbers) and, through ``check_options``, the solver's own options,
    then calls the kernel. The unchecked kernel stays reachable as ``.unchecked`` for callers that
    validated already (:func:`mixkit.ot.transport_plan`).
    """

    def wrap(kernel: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(kernel)

        @functools.wraps(kernel)
        def checked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            check_float_tensor(arguments["cost"], "cost", 3)
            arguments["eps"], arguments["max_iter"], arguments["tol"] = check_solver_args(
                arguments["eps"], arguments["max_iter"], arguments["tol"])
            if check_options is not None:
                check_options(**arguments)
            return kernel(*bound.args, **bound.kwargs)

        checked.unchecked = kernel
        return checked

    return wrap
