"""The run directory of ``mixkit-train``, read back by ``mixkit-eval`` and ``mixkit viz``.

``<output>/<experiment>/`` holds ``args.yaml`` (every training argument, plus the resolved ``model``,
``model_kwargs``, ``num_classes``, ``in_chans``, ``img_size``, ``mean``, ``std``, ``dataset``,
``data_dir``, ``val_split`` and ``classes``: the training classes in label order, by which mixkit-eval
labels an evaluation split), ``summary.csv``/``summary.json``, ``checkpoints/``, and the final
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
    "create_model_from_weights",
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

    Raises:
        ValueError: The weights file is not safetensors, or does not fit the run's model (the message names
            both and the tensors that differ).
    """
    import timm  # mixkit's own models are registered with timm when mixkit is imported
    from safetensors import SafetensorError
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
    # --gp changes the pooling, not the tensors: a model built without it would load and compute other logits.
    pool = {"global_pool": args["gp"]} if args.get("gp") else {}
    model = timm.create_model(args["model"], pretrained=False, num_classes=int(args["num_classes"]),
                              in_chans=int(args["in_chans"]), **pool, **(args.get("model_kwargs") or {}))
    described = (f"the run's model {args['model']} (num_classes={args['num_classes']}, in_chans={args['in_chans']}"
                 + (f", model_kwargs={args['model_kwargs']}" if args.get("model_kwargs") else "") + f", from {run_dir / ARGS_FILE})")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"weights file {weights} cannot be read as safetensors ({e}): pass the model.safetensors "
                         "that mixkit-train wrote") from e
    problems = _state_dict_mismatch(model, state)
    if problems:
        raise ValueError(f"weights file {weights} does not fit {described}: {problems}. The weights come from "
                         "another model or run: evaluate the run directory they were written in, or pass --model "
                         "NAME --checkpoint FILE with that model's settings")
    model.load_state_dict(state)
    return model.to(device).eval(), args


def _state_dict_mismatch(model: nn.Module, state: dict[str, torch.Tensor], shown: int = 3) -> str:
    """What differs between a model's tensors and a state dict, in a few words ('' when they fit)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    for what, keys in (("tensors of other shapes (file vs model)", shapes), ("missing from the file", missing),
                       ("not in the model", unexpected)):
        if keys:
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:shown])}" + (", ..." if len(keys) > shown else ""))
    return "; ".join(parts)


def create_model_from_weights(name: str, *, checkpoint: str | os.PathLike | None = None, pretrained: bool = False,
                              device: str | torch.device = "cpu",
                              **model_kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """A timm model with weights from a file or timm's pretrained cache, in eval mode, for a model that is
    not a mixkit-train run.

    Args:
        name: timm model name (mixkit's registered models included).
        checkpoint: Weights file (.safetensors, .pth), loaded by timm.
        pretrained: Use timm's pretrained weights instead.
        device: Where the model goes.
        **model_kwargs: ``timm.create_model`` arguments (``num_classes``, ``in_chans``, ...).

    Returns:
        ``(model, settings)`` with the keys of :data:`REQUIRED_KEYS`, as a run's args.yaml holds them.
    """
    import timm

    if checkpoint is None and not pretrained:
        raise ValueError(f"--model {name} needs weights: --checkpoint FILE or --pretrained (an untrained model "
                         "shows nothing)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    try:
        model = timm.create_model(name, pretrained=pretrained,
                                  checkpoint_path=str(checkpoint) if checkpoint else None, **model_kwargs)
    except RuntimeError as e:  # timm's unknown-model and state-dict mismatch errors
        raise ValueError(f"--model {name}: {e}") from e
    cfg = timm.data.resolve_data_config({}, model=model)
    # timm's data config describes the pretrained weights (3 channels) even for a model built with another
    # in_chans, so the model's own argument wins.
    settings = {"model": name, "model_kwargs": dict(model_kwargs), "num_classes": model.num_classes,
                "in_chans": int(model_kwargs.get("in_chans", cfg["input_size"][0])),
                "img_size": cfg["input_size"][-1], "mean": list(cfg["mean"]), "std": list(cfg["std"]),
                "crop_pct": cfg.get("crop_pct"), "interpolation": cfg.get("interpolation")}
    return model.to(device).eval(), settings


def save_model_safetensors(model: nn.Module, path: str | os.PathLike, *,
                           metadata: dict[str, str] | None = None) -> Path:
    """Writes ``model.state_dict()`` as safetensors atomically (a kill leaves the old file or none).

    Tied or shared tensors are cloned so that safetensors accepts them. ``metadata``: the file's
    ``__metadata__`` (string values; mixkit-train names the run's method, weights and mixkit's revision).
    """
    from safetensors.torch import save

    # timm's SplitBatchNorm2d (--split-bn) holds extra statistics for the augmented splits under "aux_bn.":
    # training state (checkpoints keep it), not the model's; its own BatchNorm is what evaluation uses, so the
    # file loads into the plain timm model.
    from timm.layers import SplitBatchNorm2d

    aux = tuple(f"{name}.aux_bn." for name, m in model.named_modules() if isinstance(m, SplitBatchNorm2d))
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()
             if not (aux and k.startswith(aux))}
    # save() to bytes, then the package's atomic write: safetensors' save_file would reset the file's mode
    # to 0600 (unreadable to the other users of a shared run directory) and does not fsync.
    return write_bytes_atomic(path, save(state, metadata=metadata))
