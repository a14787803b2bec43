"""The run directory of ``mixkit-train``, read back by ``mixkit-eval`` and ``mixkit viz``.

``<output>/<experiment>/`` holds ``args.yaml`` (every training argument, plus the resolved ``model``,
``model_kwargs``, ``num_classes``, ``in_chans``, ``img_size``, ``mean``, ``std``, ``dataset``,
``data_dir`` and ``val_split``), ``summary.csv``/``summary.json``, ``checkpoints/``, and the final
weights ``model.safetensors`` (``model_ema.safetensors`` when EMA is on).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .atomic import write_bytes_atomic

__all__ = [
    "ARGS_FILE",
    "EMA_WEIGHTS_FILE",
    "WEIGHTS_FILE",
    "create_model_from_run",
    "find_run_file",
    "load_run_args",
    "save_model_safetensors",
]

ARGS_FILE = "args.yaml"
WEIGHTS_FILE = "model.safetensors"
EMA_WEIGHTS_FILE = "model_ema.safetensors"
# Keys that mixkit-eval and mixkit viz need to rebuild the model and its input pipeline.
REQUIRED_KEYS = ("model", "num_classes", "in_chans", "img_size", "mean", "std")


def find_run_file(run_dir: str | os.PathLike, name: str) -> Path:
    """``run_dir / name``, or a FileNotFoundError that says what a run directory holds."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist: pass the <output>/<experiment> "
                                "folder that mixkit-train wrote")
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {run_dir} a finished mixkit-train run? (a run writes "
                                f"{ARGS_FILE} at its start and {WEIGHTS_FILE} at its end)")
    return path


def load_run_args(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The training arguments of a run, from its ``args.yaml``.

    Raises:
        FileNotFoundError: The directory or its args.yaml is missing.
        ValueError: args.yaml is not a mapping or lacks a key needed to rebuild the model.
    """
    path = find_run_file(run_dir, ARGS_FILE)
    with open(path) as f:
        args = yaml.safe_load(f)
    if not isinstance(args, dict):
        raise ValueError(f"{path} is not a YAML mapping of training arguments")
    missing = [k for k in REQUIRED_KEYS if args.get(k) is None]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: it was not written by mixkit-train, or by an "
                         "older version; pass --model/--num-classes/... explicitly")
    return args


def create_model_from_run(path: str | os.PathLike, *, ema: bool = False,
                          device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds a run's model with timm and loads its final weights, in eval mode.

    Args:
        path: A run directory, or a ``.safetensors`` file inside one (its folder holds args.yaml).
        ema: Load ``model_ema.safetensors`` instead of ``model.safetensors`` (ignored for a file path).
        device: Where the model goes.

    Returns:
        ``(model, args)``: the model and the run's arguments.
    """
    import timm  # mixkit's own models are registered with timm when mixkit is imported
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        run_dir, weights = path.parent, path
    else:
        run_dir = path
        weights = find_run_file(run_dir, EMA_WEIGHTS_FILE if ema else WEIGHTS_FILE)
    args = load_run_args(run_dir)
    model = timm.create_model(args["model"], pretrained=False, num_classes=int(args["num_classes"]),
                              in_chans=int(args["in_chans"]), **(args.get("model_kwargs") or {}))
    model.load_state_dict(load_file(str(weights), device=str(device)))
    return model.to(device).eval(), args


def save_model_safetensors(model: nn.Module, path: str | os.PathLike) -> Path:
    """Writes ``model.state_dict()`` as safetensors atomically (a kill leaves the old file or none).

    Tied or shared tensors are cloned so that safetensors accepts them.
    """
    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    # save() to bytes, then the package's atomic write: safetensors' save_file would reset the file's mode
    # to 0600 (unreadable to the other users of a shared run directory) and does not fsync.
    return write_bytes_atomic(path, save(state))
