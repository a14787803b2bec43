"""``mixkit-train``: timm train.py's flags, mixkit's mixing methods, an Accelerate engine.

``python -m mixkit.train --dataset fashion_mnist --model preact_resnet_tiny_cifar --mixup alignmixup``;
``accelerate launch -m mixkit.train ...`` for several processes or nodes. Recipes in ``recipes/`` call
``run_recipe`` with a paper's defaults.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .args import ParseKwargs, build_parser, parse_args
from .checkpoint import CheckpointError, find_checkpoint, list_checkpoints
from .data import build_loaders, resolve_data_spec, resolve_split
from .engine import NonFiniteLossError, end_epoch, train, train_one_epoch
from .evaluate import evaluate
from .setup import Run, build_mixup, resolve_lr, setup, validate_args
from .state import TrainState

__all__ = ["CheckpointError", "NonFiniteLossError", "ParseKwargs", "Run", "TrainState", "build_loaders",
           "build_mixup", "build_parser", "end_epoch", "evaluate", "find_checkpoint", "list_checkpoints", "main",
           "parse_args", "resolve_data_spec", "resolve_lr", "resolve_split", "run_recipe", "setup", "train",
           "train_one_epoch", "validate_args"]


def _report(summary: dict[str, Any]) -> None:
    final = summary.get("final") or {}
    if final.get("eval_top1") is not None and summary.get("eval_samples") is not None:
        weights = ("the EMA weights, model_ema.safetensors; mixkit-eval scores them too" if summary.get("eval_weights") == "ema"
                   else "the trained weights, model.safetensors")
        print(f"{summary.get('eval_split') or 'evaluation'} top-1: {final['eval_top1']:.2f}%  "
              f"(top-5 {final['eval_top5']:.2f}%, {summary['eval_samples']} samples, {weights})")
        best = summary.get("best")
        if best:
            print(f"best {best['metric']}: {best['value']:.4g} at epoch {best['epoch']} ({best['file']})")
    print(f"run directory: {summary['run_dir']}")


def _run(args) -> int:
    from accelerate.state import PartialState

    try:
        summary = train(args)
    except (ValueError, TypeError, FileNotFoundError, NonFiniteLossError) as e:
        print(f"mixkit-train: error: {e}", file=sys.stderr)
        return 2
    if PartialState().is_main_process:
        _report(summary)
    return 0


def run_recipe(defaults: Mapping[str, Any], *, description: str, argv: Sequence[str] | None = None,
               schedules: Mapping[str, Mapping[str, Any]] | None = None, schedule_help: str = "") -> int:
    """Parses the command line over a recipe's defaults, prints the effective configuration and trains.

    Precedence, lowest first: timm's defaults, the recipe's ``defaults``, the ``--schedule`` preset, a
    ``-c/--config`` file, the command line.

    Args:
        defaults: The recipe's argument values.
        description: ``--help`` text of the recipe.
        argv: Arguments (default: sys.argv[1:]).
        schedules: Named presets selectable with ``--schedule`` (None: no such flag).
        schedule_help: ``--help`` text of ``--schedule``.
    """
    import argparse

    parser = build_parser(description)
    defaults = dict(defaults)
    if schedules:
        parser.add_argument("--schedule", choices=sorted(schedules), default=None,
                            help=schedule_help or "a named preset of the recipe's schedule")
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--schedule", choices=sorted(schedules), default=None)
        known, _ = pre.parse_known_args(argv)
        if known.schedule:
            defaults.update(schedules[known.schedule])
    args = parse_args(argv, defaults=defaults, parser=parser)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        timm_defaults = build_parser()
        print("effective configuration (values that differ from timm train.py's defaults):")
        for k, v in sorted(vars(args).items()):
            if k in defaults or timm_defaults.get_default(k) != v:
                print(f"  {k}: {v}")
    return _run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mixkit-train`` console script."""
    return _run(parse_args(argv))
