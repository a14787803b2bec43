"""``mixkit-eval`` (also ``python -m mixkit.eval``): accuracy, calibration and robustness of a trained model.

Evaluates a mixkit-train run directory (or a ``.safetensors`` file inside one), or a timm model name
with weights, on the run's evaluation data; writes ``eval.json`` and ``reliability.png`` next to the
weights (atomically) and prints the numbers. Localization (``--localization``) lives in ``wsol``, OOD detection
(``--ood``, ``--ood-dir``) in ``oodreport``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_json_atomic
from ..data.imagefolder import DEFAULT_VALIDATE, VALIDATE_HELP, VALIDATE_MODES
from .attacks import NormalizedModel
from .data import FASHION_MNIST, EvalData, as_floats, fashion_mnist_test, image_folder_val, training_classes
from .evaluate import AttackConfig, evaluate
from .locdata import CUB, PLACED_DATASET, cub_test, placed_root, placed_test
from .metrics import DEFAULT_BINS
from .oodreport import add_ood_args, format_ood_table, ood_report, ood_requested
from .reliability import plot_reliability_diagram
from .wsol import add_localization_args, classification_dataset, localization_report

__all__ = ["build_parser", "main"]

_DESCRIPTION = """Accuracy, calibration and robustness of a trained classifier: top-1, top-5, NLL, expected
calibration error (equal-width confidence bins, Guo et al. 2017) with a reliability diagram, and FGSM and PGD
robust accuracy (L-inf, pixel space), and with --localization weakly supervised object localization from
class activation maps (MaxBoxAcc, top-1 and GT-known localization), and with --ood / --ood-dir
out-of-distribution detection (AUROC, FPR at 95% TPR, AUPR-in/out, detection error). Evaluates a
mixkit-train run directory (or a .safetensors file inside one) on the run's evaluation data, or a timm
model name with weights."""

_EXAMPLES = """examples:
  mixkit-eval output/train/demo                      # a mixkit-train run: its model.safetensors and data
  mixkit-eval output/train/demo --raw                # the trained weights of a --model-ema run (default: its EMA)
  mixkit-eval output/train/demo/model.safetensors --eps 0.1 --pgd-steps 20
  mixkit-eval --model resnet50 --checkpoint r50.pth --data-dir /data/imagenet --output r50-eval.json
  mixkit-eval output/train/cub --localization cub --data-dir CUB_200_2011
  mixkit-eval RUN --localization imagenet --data-dir /data/imagenet --boxes-dir /data/imagenet/val_boxes
  mixkit-eval output/train/placed --localization placed   # offline: Placed Fashion-MNIST
  mixkit-eval output/train/demo --ood digits noise --ood-dir /data/notmnist --ood-scores msp energy odin

Outputs (next to the weights unless --output/--diagram say otherwise): eval.json (eval_<weights>.json for
other weight files) with top-1, top-5, NLL, ECE, the calibration bins and the FGSM / PGD accuracies, and
reliability.png (800 x 800 px); with --localization also a 'localization' entry and localization.png; with
--ood / --ood-dir an 'ood' entry (set -> score -> auroc, fpr95, aupr_in, aupr_out, detection_error, as
fractions) and a score histogram ood_<set>.png per set.
Attacks are L-inf in pixel space [0, 1]: the model is wrapped so that it normalises its input with the
run's mean and std, and epsilon is in pixels (8/255 ~ 0.0314)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``mixkit-eval`` argument parser."""
    p = argparse.ArgumentParser(
        prog="mixkit-eval", description=_DESCRIPTION, epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model")
    src.add_argument("run", nargs="?", type=Path,
                     help="mixkit-train run directory (holding args.yaml and model.safetensors), or a "
                          ".safetensors weights file inside one; omit it to evaluate --model")
    src.add_argument("--ema", action="store_true",
                     help="score the run's EMA weights (model_ema.safetensors); the default for a run trained with "
                          "--model-ema, whose training numbers are the EMA's (one rule: the numbers of a run are "
                          "the EMA's when it keeps one)")
    src.add_argument("--raw", action="store_true",
                     help="score the run's trained weights (model.safetensors) even when it kept an EMA")
    src.add_argument("--model", help="timm model name, evaluated instead of a run (needs --checkpoint or --pretrained)")
    src.add_argument("--checkpoint", type=Path,
                     help="weights for --model (.safetensors, .pth or .pt, loaded by timm.create_model)")
    src.add_argument("--pretrained", action="store_true",
                     help="--model with timm's pretrained weights (downloads unless they are cached)")
    src.add_argument("--num-classes", type=int, help="classifier outputs of --model (default: the model's)")
    src.add_argument("--in-chans", type=int, help="input channels of --model (default: the model's, usually 3)")
    src.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                     help="extra keyword arguments of timm.create_model for --model (ints and floats parsed)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="'fashion_mnist' for Debian's Fashion-MNIST test split, 'cub' for "
                                        "CUB-200-2011's test split under --data-dir, 'placed_fashion_mnist'; "
                                        "default: the run's dataset, else an ImageFolder given by --data-dir")
    data.add_argument("--data-dir", type=Path,
                      help="ImageFolder root with a val/ or validation/ split (default: the run's data_dir)")
    data.add_argument("--split", help="validation split folder under --data-dir (default: the run's val_split, "
                                      "then val, then validation)")
    data.add_argument("--img-size", type=int, help="input side length (default: the run's, else the model's)")
    data.add_argument("--crop-pct", type=float, help="ImageFolder centre-crop fraction (default: the run's, "
                                                     "else the model's, else 0.875)")
    data.add_argument("--mean", type=float, nargs="+", help="normalisation mean per channel (default: the run's, "
                                                            "else the model's pretrained_cfg)")
    data.add_argument("--std", type=float, nargs="+", help="normalisation std per channel (default: likewise)")
    data.add_argument("--limit", type=int, help="evaluate only the first N images (quick checks)")
    data.add_argument("-b", "--batch-size", type=int, default=256, help="images per batch (default 256)")
    data.add_argument("--workers", type=int, default=2, help="ImageFolder loader processes (default 2)")
    data.add_argument("--validate", choices=VALIDATE_MODES, default=DEFAULT_VALIDATE, help=VALIDATE_HELP)
    att = p.add_argument_group("attacks (L-inf, pixel space)")
    att.add_argument("--eps", type=float, default=8 / 255,
                     help="attack radius in pixels of [0, 1] images, for FGSM and PGD (default 8/255)")
    att.add_argument("--pgd-steps", type=int, default=10, help="PGD iterations (default 10)")
    att.add_argument("--pgd-step-size", type=float,
                     help="PGD step in pixels (default 2.5 * eps / steps, Madry et al.)")
    att.add_argument("--no-random-start", action="store_true",
                     help="start PGD at the clean image instead of a uniform point of the eps-ball")
    att.add_argument("--attack-samples", type=int,
                     help="attack only the first N evaluated images (default: all; attacks cost about "
                          "pgd_steps + 3 forward and backward passes per image)")
    att.add_argument("--no-attacks", action="store_true", help="skip FGSM and PGD")
    att.add_argument("--seed", type=int, default=0, help="seed of PGD's random start (default 0)")
    add_localization_args(p)
    add_ood_args(p)
    out = p.add_argument_group("output")
    out.add_argument("--bins", type=int, default=DEFAULT_BINS,
                     help=f"equal-width confidence bins of the ECE (default {DEFAULT_BINS})")
    out.add_argument("--output", type=Path,
                     help="JSON file to write (default: eval.json next to the run's weights; required for "
                          "--model without --checkpoint)")
    out.add_argument("--diagram", type=Path,
                     help="reliability diagram PNG (default: reliability.png next to the JSON, named after it)")
    out.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-kwargs takes KEY=VALUE pairs, got {item!r}")
        for cast in (int, float):
            try:
                kwargs[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = {"true": True, "false": False}.get(value.lower(), value)
    return kwargs


def _run_weights(args: argparse.Namespace) -> tuple[bool, str, bool]:
    """(score the EMA, why, whether that is the rule's choice) for a run directory. The rule of mixkit-train's
    numbers: the EMA's when the run kept one; --raw / --ema choose otherwise."""
    from ..rundir import EMA_WEIGHTS_FILE, load_run_args

    if args.ema and args.raw:
        raise ValueError("--ema and --raw exclude each other: --ema scores model_ema.safetensors, --raw model.safetensors")
    rule_ema = bool(load_run_args(args.run).get("model_ema")) and (args.run / EMA_WEIGHTS_FILE).is_file()
    if args.ema:
        return True, "the run's EMA weights (--ema)", rule_ema
    if args.raw:
        return False, "the run's trained weights (--raw)", not rule_ema
    if rule_ema:
        return True, ("the run's EMA weights: it was trained with --model-ema and its training numbers are the "
                      "EMA's (--raw scores model.safetensors)"), True
    return False, "the run's trained weights (it kept no EMA)", True


def _file_weights(path: Path) -> str:
    """Which weights a .safetensors file holds: its mixkit metadata, else its name."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            kind = (f.metadata() or {}).get("weights")
    except Exception:  # noqa: BLE001 (unreadable: create_model_from_run reports it)
        kind = None
    return kind or ("ema" if path.stem.endswith("_ema") else "raw")


def _load_model(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], Path | None]:
    """(model in eval mode, the settings it was trained with, the weights file or None). The settings' ``scored``
    says which weights these are and why."""
    from .. import models  # noqa: F401  (registers mixkit's timm models)
    from ..rundir import EMA_WEIGHTS_FILE, WEIGHTS_FILE, create_model_from_run, create_model_from_weights

    if args.run is not None:
        if args.model or args.checkpoint or args.pretrained:
            raise ValueError("give either a run directory / weights file, or --model with --checkpoint/--pretrained, "
                             "not both")
        if not args.run.exists():
            raise FileNotFoundError(f"{args.run} does not exist: pass a mixkit-train run directory "
                                    "(<output>/<experiment>) or a .safetensors file inside one")
        if args.run.is_file() and args.run.suffix != ".safetensors":
            raise ValueError(f"{args.run} is not a .safetensors file; for other checkpoints use "
                             "--model NAME --checkpoint FILE")
        if args.run.is_file():
            if args.ema or args.raw:
                raise ValueError(f"--ema/--raw choose a run directory's weights file; {args.run} is one file already")
            ema, why, by_rule = _file_weights(args.run) == "ema", f"the weights of {args.run.name}", False
        else:
            ema, why, by_rule = _run_weights(args)
        model, run_args = create_model_from_run(args.run, ema=ema, device=device)
        weights = args.run if args.run.is_file() else args.run / (EMA_WEIGHTS_FILE if ema else WEIGHTS_FILE)
        return model, {**run_args, "scored": {"weights": "ema" if ema else "raw", "why": why, "by_rule": by_rule}}, weights
    if args.ema or args.raw:
        raise ValueError("--ema/--raw choose the weights of a mixkit-train run directory; --model takes --checkpoint")
    if not args.model:
        raise ValueError("nothing to evaluate: pass a run directory, or --model NAME with --checkpoint FILE "
                         "(or --pretrained)")
    kwargs = _parse_kwargs(args.model_kwargs)
    for key in ("num_classes", "in_chans"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    model, settings = create_model_from_weights(args.model, checkpoint=args.checkpoint, pretrained=args.pretrained,
                                                device=device, **kwargs)
    return model, settings, args.checkpoint


def _dataset(args: argparse.Namespace, settings: dict[str, Any]) -> str:
    # The evaluated dataset's name ('' for an ImageFolder under --data-dir / the run's data_dir).
    return (args.dataset or classification_dataset(args.localization) or settings.get("dataset")
            or "").lower().replace("-", "_")


def _load_data(args: argparse.Namespace, settings: dict[str, Any], img_size: int, in_chans: int) -> EvalData:
    dataset = _dataset(args, settings)
    if dataset in (CUB, PLACED_DATASET):
        return _own_test_split(dataset, args, settings, img_size, in_chans)
    if dataset in (FASHION_MNIST, "torch/fashion_mnist", "torch/fashionmnist", "fashionmnist"):
        # The run's own IDX folder (mixkit-train --data-dir), or --data-dir: a subset's or another split's files.
        return fashion_mnist_test(img_size=img_size, in_chans=in_chans, batch_size=args.batch_size, limit=args.limit,
                                  root=placed_root(args.data_dir, settings))
    data_dir = args.data_dir or settings.get("data_dir")
    if not data_dir:
        raise ValueError("no evaluation data: pass --data-dir (an ImageFolder root with val/ or validation/) or "
                         "--dataset fashion_mnist")
    data = image_folder_val(data_dir, img_size=img_size, in_chans=in_chans,
                            split=args.split or settings.get("val_split"),
                            crop_pct=args.crop_pct or settings.get("crop_pct") or 0.875,
                            interpolation=settings.get("interpolation") or "bilinear",
                            batch_size=args.batch_size, workers=args.workers,
                            class_map=training_classes(settings) if args.run is not None else None,
                            validate=args.validate)
    if args.limit is not None:
        data = _limited(data, args.limit, args.batch_size)
    return data


class _Limited:
    # The first ``limit`` samples of an ImageFolder's batches (Fashion-MNIST slices its tensors instead).
    def __init__(self, batches: Any, limit: int) -> None:
        self.batches, self.limit = batches, limit

    def __iter__(self):
        seen = 0
        for x, y in self.batches:
            if seen >= self.limit:
                return
            k = min(len(y), self.limit - seen)
            seen += k
            yield x[:k], y[:k]


def _limited(data: EvalData, limit: int, batch_size: int) -> EvalData:
    n = min(limit, data.num_samples)
    return EvalData(_Limited(data.batches, n), n, -(-n // batch_size), f"{data.source}, first {n}")


def _own_test_split(dataset: str, args: argparse.Namespace, settings: dict[str, Any], img_size: int,
                   in_chans: int) -> EvalData:
    # The test splits of runs trained with mixkit-train --dataset cub / placed_fashion_mnist.
    if dataset == PLACED_DATASET:
        return placed_test(img_size=img_size, in_chans=in_chans, batch_size=args.batch_size, limit=args.limit,
                           root=placed_root(args.data_dir, settings))
    data_dir = args.data_dir or settings.get("data_dir")
    if not data_dir:
        raise ValueError("--dataset cub needs --data-dir (the CUB_200_2011 folder with images.txt and images/)")
    data = cub_test(data_dir, img_size=img_size, in_chans=in_chans,
                    crop_pct=args.crop_pct or settings.get("crop_pct") or 0.875,
                    interpolation=settings.get("interpolation") or "bilinear", batch_size=args.batch_size,
                    workers=args.workers)
    return data if args.limit is None else _limited(data, args.limit, args.batch_size)


def _default_output(weights: Path | None, settings: dict[str, Any]) -> Path:
    # eval.json holds a run's numbers by the rule (its EMA's when it kept one); other weights get their own name.
    if weights is None:
        raise ValueError("--model with --pretrained has no weights file to write next to: pass --output FILE.json")
    stem = weights.stem
    by_rule = (settings.get("scored") or {}).get("by_rule", False)
    return weights.parent / ("eval.json" if stem == "model" or by_rule else f"eval_{stem}.json")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluates as ``args`` say and writes the JSON and the diagram; returns the JSON's content."""
    if args.bins < 1:
        raise ValueError(f"--bins must be >= 1, got {args.bins}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    attack = None
    if not args.no_attacks:
        attack = AttackConfig(eps=args.eps, pgd_steps=args.pgd_steps, pgd_step_size=args.pgd_step_size,
                              random_start=not args.no_random_start, max_samples=args.attack_samples,
                              seed=args.seed)
    want_ood = ood_requested(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, settings, weights = _load_model(args, device)
    output = args.output or _default_output(weights, settings)
    diagram = args.diagram or output.with_name(
        "reliability.png" if output.name == "eval.json" else f"reliability_{output.stem}.png")
    in_chans = int(settings["in_chans"])
    img_size = int(args.img_size or _side(settings["img_size"]))
    mean = as_floats(args.mean or settings["mean"], in_chans, "mean")
    std = as_floats(args.std or settings["std"], in_chans, "std")
    data = _load_data(args, settings, img_size, in_chans)
    start = time.perf_counter()
    result = evaluate(NormalizedModel(model, mean, std).to(device), data.batches, attack=attack, n_bins=args.bins,
                      device=device, progress=not args.no_progress, total=data.num_batches, desc="mixkit-eval")
    elapsed = time.perf_counter() - start
    plot_reliability_diagram(result.bins, diagram, title=f"{settings['model']} on {data.source}")
    scored = settings.get("scored") or {"weights": "given", "why": "the --checkpoint/--pretrained weights of --model"}
    report = {"model": settings["model"], "weights": str(weights) if weights else "pretrained",
              "scored_weights": scored["weights"], "scored_weights_why": scored["why"],
              "run": str(args.run) if args.run else None, "data": data.source, "img_size": img_size,
              "mean": list(mean), "std": list(std), **result.to_dict(), "reliability_diagram": str(diagram),
              "device": str(device), "elapsed_s": elapsed, "torch": torch.__version__}
    if args.localization:
        report["localization"] = localization_report(args, model, settings, img_size=img_size, in_chans=in_chans,
                                                     mean=mean, std=std, device=device, output=output)
    if want_ood:
        report.update(ood_report(args, model, settings, data, img_size=img_size, in_chans=in_chans, mean=mean,
                                 std=std, device=device, diagram=diagram, dataset=_dataset(args, settings)))
    write_json_atomic(output, report)
    report["output"] = str(output)
    return report


def _side(img_size: Any) -> int:
    # args.yaml may hold an int or timm's (C, H, W) / (H, W) input size.
    if isinstance(img_size, list | tuple):
        return int(img_size[-1])
    return int(img_size)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mixkit-eval`` and ``python -m mixkit.eval``."""
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"mixkit-eval: error: {e}", file=sys.stderr)
        return 2
    m, a = report["metrics"], report["attacks"]
    line = (f"top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  NLL {m['nll']:.4f}  ECE {100 * m['ece']:.2f}% "
            f"({m['num_samples']} images)")
    if a:
        line += (f"\nFGSM {a['fgsm_top1']:.2f}%  PGD-{a['pgd_steps']} {a['pgd_top1']:.2f}%  at eps {a['eps']:.4f} "
                 f"(clean {a['clean_top1']:.2f}% on the {a['num_samples']} attacked images)")
    loc = report.get("localization")
    if loc:
        line += (f"\nlocalization: MaxBoxAcc {loc['max_box_acc']:.2f}% (threshold {loc['best_threshold']:.2f}), "
                 f"at the threshold chosen on {loc['threshold_chosen_on']}, {loc['chosen_threshold']:.2f}: "
                 f"top-1 loc {loc['top1_loc']:.2f}%, GT-known loc {loc['gt_known_loc']:.2f}% "
                 f"({loc['num_test']} test images)")
    print(f"weights: {report['scored_weights_why']} ({report['weights']})")
    if report.get("ood"):
        line += "\n" + format_ood_table(report["ood"])
    print(line)
    figures = [report["reliability_diagram"], *([loc["figure"]] if loc else []),
               *(entry["histogram"] for entry in report.get("ood", {}).values())]
    print(f"wrote {report['output']} and {', '.join(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
