"""What a run exports for timm users: safetensors metadata naming the run, and timm's ``config.json``.

``config.json`` is written by timm's own ``save_config_for_hf`` (the file ``timm.create_model("hf-hub:...")``
and ``"local-dir:..."`` read), so ``timm.create_model("local-dir:<run>", pretrained=True)`` rebuilds the model
with the run's ``num_classes``, ``model_args`` and data config and loads ``model.safetensors``, head included.
mixkit adds only the atomic write and the run's preprocessing and class names.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from torch import nn

from ..atomic import temp_file_beside

__all__ = ["CONFIG_FILE", "mixkit_revision", "weights_metadata", "write_timm_config"]

CONFIG_FILE = "config.json"


@functools.lru_cache(maxsize=1)
def mixkit_revision() -> str:
    """mixkit's version and, where it is known, its commit: ``0.1.0+g<sha>`` (``.dirty`` with uncommitted
    changes) from a git checkout, the commit pip recorded for a VCS install, else the version alone."""
    import mixkit

    version = mixkit.__version__
    root = Path(mixkit.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return f"{version}+g{sha}" + (".dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:  # pip install git+https://...: PEP 610's direct_url.json holds the commit
        from importlib.metadata import distribution

        text = distribution("mixkit").read_text("direct_url.json")
        commit = (json.loads(text).get("vcs_info") or {}).get("commit_id") if text else None
        if commit:
            return f"{version}+g{commit}"
    except Exception:  # noqa: BLE001 (not installed as a distribution, or no metadata: the version alone)
        pass
    return version


def weights_metadata(args: Any, *, weights: str, epoch: int | None = None, **extra: Any) -> dict[str, str]:
    """The ``__metadata__`` of a run's safetensors files (safetensors stores string values only).

    Args:
        args: The run's parsed arguments.
        weights: ``raw`` (the trained weights) or ``ema`` (timm's ModelEmaV3 average).
        epoch: The epoch the weights are from (None: the end of training).
        **extra: More entries (e.g. the metric of a best checkpoint).
    """
    meta = {"format": "pt", "producer": "mixkit-train", "mixkit": mixkit_revision(), "architecture": args.model,
            "method": str(args.mixup), "weights": weights}
    if args.mixup_kwargs:
        meta["method_kwargs"] = json.dumps(args.mixup_kwargs, sort_keys=True)
    if epoch is not None:
        meta["epoch"] = str(epoch)
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def write_timm_config(model: nn.Module, path: str | os.PathLike, *, model_args: dict[str, Any], in_chans: int,
                      img_size: int, mean: Any, std: Any, crop_pct: float, interpolation: str,
                      label_names: list[str] | None, extra: dict[str, Any] | None = None) -> Path:
    """timm's ``config.json`` for ``model`` (its ``pretrained_cfg`` with the run's data config and classes),
    written atomically.

    Args:
        model: The unwrapped trained model (built by ``timm.create_model``, so it records its arguments).
        path: Where to write (``<run>/config.json``).
        model_args: The ``timm.create_model`` arguments that rebuild the model (``num_classes``, ``in_chans``,
            ``--model-kwargs``).
        in_chans: Input channels.
        img_size: Evaluation image side.
        mean: Normalisation mean per channel.
        std: Normalisation std per channel.
        crop_pct: Evaluation centre-crop fraction.
        interpolation: Resize interpolation the run used.
        label_names: The training classes in label order (the classifier's outputs).
        extra: More top-level entries (timm keeps unknown ones: the run's method and mixkit's revision).
    """
    # timm's writer of the file (save_for_hf, which timm exports, also writes the weights: non-atomically,
    # and mixkit writes its own with metadata).
    from timm.models._hub import save_config_for_hf

    path = Path(path)
    model_config: dict[str, Any] = dict(extra or {})
    if label_names and len(label_names) == model.num_classes:  # a larger --num-classes has unnamed outputs
        model_config["label_names"] = list(label_names)
    data_config = dict(input_size=(in_chans, img_size, img_size), mean=tuple(mean), std=tuple(std),
                       crop_pct=crop_pct, interpolation=interpolation)
    if "data_config" not in inspect.signature(save_config_for_hf).parameters:
        # timm before its data_config argument (1.0.2x) writes the model's registry pretrained_cfg and lets
        # model_config's entries replace its keys: the run's data config and classes go in that way.
        from timm.models._pretrained import filter_pretrained_cfg

        cfg = filter_pretrained_cfg(model.pretrained_cfg, remove_source=True, remove_null=True)
        cfg.pop("architecture", None)
        model_config["pretrained_cfg"] = {**cfg, **data_config, "num_classes": model.num_classes}
        data_config = None
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_file_beside(path) as tmp:
        kwargs = {} if data_config is None else {"data_config": data_config}
        save_config_for_hf(model, tmp, model_config=model_config, model_args=dict(model_args), **kwargs)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return path
