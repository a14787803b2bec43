"""The checked public entry point of a solver kernel: one rule for every solver.

A solver module defines its kernel as a private ``_sinkhorn_<name>(cost, eps, max_iter, tol, **options)``
that trusts its input, and exports ``sinkhorn_<name> = solver_entry(_sinkhorn_<name>, check_options)``, which
validates and then calls the kernel. mixkit's own callers that validated already (``transport_plan``, the
default solver's fallbacks) call the private kernel; users call the public function.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .checks import check_float_tensor, check_solver_args

__all__ = ["solver_entry"]


def solver_entry(kernel: Callable[..., Any], check_options: Callable[..., None] | None = None) -> Callable[..., Any]:
    """The checked public function of a solver kernel ``kernel(cost, eps, max_iter, tol, **options)``.

    The returned function validates the cost (a finite float (B, n, m) tensor: one host sync), the three
    shared arguments (normalised to Python numbers) and, through ``check_options``, the solver's own
    options, then calls the kernel. It carries the kernel's name and docstring.
    """
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

    checked.__name__ = checked.__qualname__ = kernel.__name__.lstrip("_")
    return checked
