"""Experiment trackers of ``mixkit-train``: ``--log-with`` resolved to Accelerate's tracker names.

Accelerate does the logging (``Accelerator(log_with=...)``, ``init_trackers``, ``log``, ``end_training``); this
module only checks the names and that each requested tracker's package is installed, naming the pip package.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

__all__ = ["TRACKERS", "resolve_log_with", "tracker_init_kwargs"]

# Tracker name -> (module to import, pip package that provides it).
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


def resolve_log_with(value: str, log_wandb: bool = False) -> list[str]:
    """The tracker names of ``--log-with`` (a comma list, ``all`` or ``none``) plus timm's ``--log-wandb``.

    ``all`` means every tracker mixkit knows that is installed (Accelerate's meaning of "all"). wandb gets
    ``WANDB_MODE=offline`` unless the user set ``WANDB_MODE``, so a run never needs a network or a login; ``wandb
    sync <run>/wandb/offline-run-*`` uploads it later.

    Raises:
        ValueError: An unknown name, or a requested tracker whose package is not installed (names the pip package).
    """
    names = [n.strip().lower() for n in (value or "none").split(",") if n.strip()]
    if "all" in names:
        chosen = [n for n, (mod, _) in TRACKERS.items() if importlib.util.find_spec(mod) is not None]
    else:
        unknown = [n for n in names if n != "none" and n not in TRACKERS]
        if unknown:
            raise ValueError(f"--log-with {value!r}: unknown tracker(s) {unknown}; choose from "
                             f"{', '.join([*TRACKERS, 'all', 'none'])} (comma lists allowed)")
        chosen = [n for n in names if n != "none"]
    if log_wandb and "wandb" not in chosen:
        chosen.append("wandb")
    missing = [TRACKERS[n][1] for n in chosen if importlib.util.find_spec(TRACKERS[n][0]) is None]
    if missing:
        raise ValueError(f"--log-with {','.join(chosen)}: not installed: {', '.join(missing)}; "
                         f"pip install {' '.join(missing)}")
    if "wandb" in chosen:
        os.environ.setdefault("WANDB_MODE", "offline")
    return list(dict.fromkeys(chosen))


def tracker_init_kwargs(names: list[str], run_dir: Path) -> dict[str, dict[str, Any]]:
    """``init_trackers``' keywords that put each tracker's files inside the run directory: Accelerate gives its
    logging directory to TensorBoard only, so wandb would write ``./wandb`` and mlflow ``./mlruns`` in the working
    directory. An ``MLFLOW_TRACKING_URI`` the user set is kept."""
    kwargs: dict[str, dict[str, Any]] = {}
    if "wandb" in names:
        kwargs["wandb"] = {"dir": str(run_dir)}
    if "mlflow" in names:
        os.environ.setdefault("MLFLOW_TRACKING_URI", (Path(run_dir).resolve() / "mlruns").as_uri())
        kwargs["mlflow"] = {"logging_dir": str(Path(run_dir) / "mlruns")}
    return kwargs
