"""The study: every mixing method, several seeds, through ``mixkit-train`` and ``mixkit-eval``, on Fashion-MNIST.

Each run is what a user runs: ``mixkit-train`` (its engine, ``mixkit.train.train(parse_args(argv))``) writes a
run directory, and ``mixkit-eval`` (``mixkit.eval.cli.main(argv)``) writes its ``eval.json``; this script only
prepares the data folders, builds the two tools' command lines, and reads the JSON files back. Every run's
command lines are in the result JSON, so any number can be reproduced by hand.

Methods: ``none`` (no ``--mixup``: timm's label-smoothed cross-entropy) and every method registered in
``mixkit.mix.list_mixups()`` (each with its preset's defaults); at least 3 seeds each. A seed is mixkit-train's
``--seed``: the same initial weights and the same data order for every method, so runs are compared seed by
seed (alignmixup minus each method, and the number of seeds alignmixup wins).

Two tracks per (method, seed), both trained from a class-balanced subset of Debian's offline Fashion-MNIST
(drawn once with seed 0; ``mixkit-train --dataset ... --data-dir`` reads it from a folder of IDX files this
script writes under ``--work-dir``):

- **classification**: ``--dataset fashion_mnist --img-size 32`` (every method sees the CIFAR side the PreAct
  ResNets are made for; PuzzleMix's default grid refuses 28 px). ``mixkit-eval`` on the full 10,000-image test split gives
  top-1, ECE, NLL, FGSM and PGD (L-inf, pixel space, on the first ``attack_samples`` test images, which the
  folder's test file orders class-balanced first) and, where ``mixkit-eval`` has ``--ood``, OOD detection
  (AUROC, FPR95 per OOD set and score); a second ``mixkit-eval`` on a folder whose test file holds the training
  subset gives ``train_top1`` (evaluation mode, no augmentation): whether the model fits its training set.
- **localization**: ``--dataset placed_fashion_mnist`` (the same objects on cluttered 64 x 64 canvases, resized
  to ``loc_img_size``): ``mixkit-eval --localization placed`` gives CAM localization on the placed test split
  (MaxBoxAcc, MaxBoxAccV2, top-1 and GT-known localization) and top-1 on it. These are separate runs because
  the issue asks for localization of models *trained* on the placed set; a model trained on centred 28 x 28
  objects has never seen a canvas.

Metrics are those of the last epoch (mixkit-train evaluates nothing during training here: ``--val-split ''``).

Presets (each flag below overrides its value):

- ``cpu`` (default): the regime where regularisation matters: ``none`` fits its training set (>= 99% training
  top-1 in its last epoch, checked in the JSON as ``none_fits_training_set``): 400 images (40 per class) at
  32 px, 125 epochs of batch 32 (1,500 updates), lr 0.05, ``preact_resnet_tiny_cifar`` at base width 8 (the
  demo's model). Measured for ``none`` on this project's shared 2-core AMD EPYC (one torch thread): at 28 px
  2,000 images x 30 epochs (batch 128) reached 88.3% training top-1, 1,000 x 60 reached 96.5%; 500 x 100 reached
  99.8, 99.8 and 98.8% on seeds 0-2 at 32 px, and 400 x 125 reached 99.75, 100.0 and 99.75% (test top-1
  81.2, 80.2, 81.5%). The localization track trains 500 placed objects for 40 epochs and scores 2,000 test
  canvases. Estimated cost (not measured as a whole): about 98 CPU-minutes, 50-55 minutes of wall time on two
  quiet cores (the per-run CPU times it adds up: docs/benchmarks.md, "The study").
- ``short``: the setting of the earlier ``benchmarks/accuracy.py`` study (10,000 images, 5 epochs, base width 8;
  here at 32 px), where ``none`` still underfits; kept for comparison.
- ``gpu``: the full 60,000-image training split, ``preact_resnet18_cifar``, 30 epochs, placed canvases at 64 px.

Runs go to ``--jobs`` worker processes (spawned, one torch thread each: on a small CPU two single-thread
processes do more than one process whose two OpenMP threads spin against each other). Each finished step is a
file on disk (``model.safetensors``, ``eval_train.json``, ``eval.json``), so an interrupted study continues where
it stopped: steps whose output exists are skipped, and the report is rebuilt from the run directories.

Writes benchmarks/results/study-<preset>[-<tag>].json, .md and .png (atomically), and a log per run under
``--work-dir``.

    python benchmarks/study.py                                 # the CPU study (resumable)
    python benchmarks/study.py --methods none alignmixup --seeds 0 1
    python benchmarks/study.py --preset gpu --device cuda
    python benchmarks/study.py --report-only                   # rebuild the report from the run directories
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS_DIR,
    balanced_subset,
    git_state,
    load_average,
    machine,
    paired_deltas,
    per_method_stats,
    pyplot,
    result_path,
    save_figure,
    uptime_load,
    write_json,
    write_text,
)

REFERENCE = "alignmixup"
NONE = "none"
FIT_TARGET = 99.0  # training top-1 (%) that `none` must reach in its last epoch in the `cpu` preset

PRESETS: dict[str, dict[str, Any]] = {
    # `none` fits its 400 training images (module docstring); an estimated 50-55 minutes on two quiet cores.
    "cpu": dict(model="preact_resnet_tiny_cifar", base_width=8, img_size=32, train_size=400, epochs=125,
                batch_size=32, lr=0.05, weight_decay=5e-4, warmup_epochs=0, attack_samples=1000,
                loc_train_size=500, loc_epochs=40, loc_img_size=32, loc_limit=2000, device="cpu"),
    # The earlier benchmarks/accuracy.py setting (there at 28 px, with its own loop): `none` underfits.
    "short": dict(model="preact_resnet_tiny_cifar", base_width=8, img_size=32, train_size=10_000, epochs=5,
                  batch_size=128, lr=0.1, weight_decay=5e-4, warmup_epochs=0, attack_samples=1000,
                  loc_train_size=10_000, loc_epochs=5, loc_img_size=32, loc_limit=2000, device="cpu"),
    # Full size for a GPU: the whole training split, PreActResNet-18, placed canvases at their 64 px.
    "gpu": dict(model="preact_resnet18_cifar", base_width=64, img_size=32, train_size=60_000, epochs=30,
                batch_size=128, lr=0.1, weight_decay=5e-4, warmup_epochs=1, attack_samples=10_000,
                loc_train_size=60_000, loc_epochs=30, loc_img_size=64, loc_limit=10_000, device="cuda"),
}
TRACKS = ("classification", "localization")

# Metric name -> (label, higher is better). OOD metrics are added per set and score as eval.json has them.
METRICS: dict[str, tuple[str, bool]] = {
    "top1": ("top-1 %", True), "ece": ("ECE %", False), "nll": ("NLL", False),
    "fgsm_top1": ("FGSM top-1 %", True), "pgd_top1": ("PGD top-1 %", True), "train_top1": ("train top-1 %", True),
    "loc_max_box_acc": ("MaxBoxAcc %", True), "loc_max_box_acc_v2": ("MaxBoxAccV2 %", True),
    "loc_top1_loc": ("top-1 loc %", True), "loc_gt_known_loc": ("GT-known loc %", True),
    "placed_top1": ("placed top-1 %", True),
}
OOD_WANTED = ("digits", "noise")  # mixkit-eval --ood's offline OOD sets, where it has the flag
OOD_METRICS = {"auroc": ("AUROC %", True), "fpr95": ("FPR95 %", False)}
TABLE_METRICS = ("top1", "ece", "fgsm_top1", "pgd_top1", "train_top1")
LOC_TABLE_METRICS = ("placed_top1", "loc_max_box_acc", "loc_top1_loc", "loc_gt_known_loc")


def all_methods() -> list[str]:
    from mixkit.mix import list_mixups

    return [NONE, *list_mixups()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to run")
    g.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="cpu: the regime where no mixing fits its training set (default); short: the earlier "
                        "5-epoch, 10,000-image setting; gpu: the full training split, PreActResNet-18, 30 epochs")
    g.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="methods to run (default: none and every method in mixkit.mix.list_mixups())")
    g.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="SEED",
                   help="mixkit-train --seed values, the same for every method (default: 0 1 2)")
    g.add_argument("--tracks", nargs="+", choices=TRACKS, default=list(TRACKS),
                   help="classification (Fashion-MNIST: accuracy, calibration, attacks, OOD, training top-1) "
                        "and/or localization (Placed Fashion-MNIST: CAM localization); default: both")
    g.add_argument("--report-only", action="store_true",
                   help="train and evaluate nothing: rebuild the JSON, table and plot from the run directories")
    s = p.add_argument_group("schedule and model (default: the preset's)")
    s.add_argument("--model", help="timm model name (mixkit-train --model)")
    s.add_argument("--base-width", type=int, help="channels of the model's first stage (--model-kwargs base_width=)")
    s.add_argument("--img-size", type=int,
                   help="side the 28 x 28 Fashion-MNIST images are resized to (classification; preset: 32, the "
                        "CIFAR side the PreAct ResNets and PuzzleMix's default grid are made for)")
    s.add_argument("--train-size", type=int, help="class-balanced Fashion-MNIST training images (classification)")
    s.add_argument("--epochs", type=int, help="training epochs (classification)")
    s.add_argument("--batch-size", type=int, help="training batch size")
    s.add_argument("--lr", type=float, help="peak SGD learning rate (cosine decay per update)")
    s.add_argument("--weight-decay", type=float, help="SGD weight decay")
    s.add_argument("--warmup-epochs", type=int, help="learning-rate warm-up epochs")
    s.add_argument("--loc-train-size", type=int, help="class-balanced training objects of the localization track")
    s.add_argument("--loc-epochs", type=int, help="training epochs of the localization track")
    s.add_argument("--loc-img-size", type=int, help="side the 64 x 64 placed canvases are resized to")
    e = p.add_argument_group("evaluation (mixkit-eval)")
    e.add_argument("--attack-samples", type=int, help="test images attacked with FGSM and PGD (preset)")
    e.add_argument("--eps", type=float, default=8 / 255, help="L-inf attack radius in pixels (default 8/255)")
    e.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (default 10; step 2.5 * eps / steps)")
    e.add_argument("--eval-limit", type=int,
                   help="evaluate only the first N test images (mixkit-eval --limit; default: all)")
    e.add_argument("--loc-limit", type=int,
                   help="placed test canvases of the localization track (mixkit-eval --limit; preset: 2,000 on "
                        "the CPU, where the CAM threshold sweep costs about as much as the training)")
    e.add_argument("--loc-holdout", type=int,
                   help="held-out images per class that choose the CAM threshold (mixkit-eval --loc-holdout; "
                        "default: mixkit-eval's, 10)")
    r = p.add_argument_group("where and how")
    r.add_argument("--device", help="cpu, cuda or cuda:N (default: the preset's)")
    r.add_argument("--source-dir", type=Path,
                   help="folder of the four Fashion-MNIST IDX .gz files the subsets are drawn from "
                        "(default: Debian's dataset-fashion-mnist)")
    r.add_argument("--work-dir", type=Path,
                   help="where the data folders, run directories and logs go (default: output/study/<preset>"
                        "[-<tag>])")
    r.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                   help=f"where the JSON, table and plot go (default {RESULTS_DIR})")
    r.add_argument("--tag", default="", help="suffix of the result files: study-<preset>[-<tag>].json")
    r.add_argument("--jobs", type=int, default=2,
                   help="parallel worker processes (default 2); 1 runs everything in this process")
    r.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar over the runs")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for name in ("base_width", "img_size", "train_size", "epochs", "batch_size", "attack_samples", "loc_train_size",
                 "loc_epochs", "loc_img_size", "loc_limit", "jobs", "threads", "pgd_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.eval_limit is not None and args.eval_limit < 1:
        p.error(f"--eval-limit must be >= 1, got {args.eval_limit}")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        p.error(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    known = all_methods()
    args.methods = args.methods or known
    unknown = sorted(set(args.methods) - set(known))
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)} "
                "(mixkit.mix.list_mixups() and none)")
    if args.work_dir is None:
        args.work_dir = Path("output/study") / (args.preset + (f"-{args.tag}" if args.tag else ""))
    return args


# ----------------------------------------------------------------------------------------------------
# Data folders: the subsets as IDX files, which mixkit-train --data-dir and mixkit-eval read


def data_folders(args: argparse.Namespace) -> dict[str, Path]:
    """The IDX folders of the runs by role (see ``prepare_data``)."""
    root = args.work_dir / "data"
    return {"train": root / f"fashion_mnist-{args.train_size}",
            "train_as_test": root / f"fashion_mnist-{args.train_size}-train-as-test",
            "placed": root / f"placed-{args.loc_train_size}"}


def _write_split(folder: Path, split: str, images: Any, labels: Any) -> None:
    from mixkit.datasets import write_idx

    write_idx(folder / f"{split}-images-idx3-ubyte.gz", images.numpy())
    write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels.numpy().astype("uint8"))


def prepare_data(args: argparse.Namespace) -> dict[str, Path]:
    """Writes (once) the IDX folders of the runs and returns them by role.

    - ``train``: the classification subset as its training split; the test split reordered so that a
      class-balanced subset of ``attack_samples`` images comes first (mixkit-eval attacks the first images).
    - ``train_as_test``: the same subset as its test split too (mixkit-eval then measures training top-1).
    - ``placed``: the localization subset as its training split, the test split as it is (the standard
      Placed Fashion-MNIST test canvases).
    """
    import torch

    from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST

    source = args.source_dir or DEFAULT_FASHION_MNIST_ROOT
    folders = data_folders(args)
    done = args.work_dir / "data" / "done.json"
    want = {"source": str(source), "train_size": args.train_size, "loc_train_size": args.loc_train_size,
            "attack_samples": args.attack_samples, "subset_seed": 0, "tracks": sorted(args.tracks)}
    old = json.loads(done.read_text()) if done.is_file() else {}
    if {k: v for k, v in old.items() if k != "tracks"} == {k: v for k, v in want.items() if k != "tracks"}:
        if set(want["tracks"]) <= set(old.get("tracks", [])):
            return folders
        want["tracks"] = sorted(set(want["tracks"]) | set(old.get("tracks", [])))
    train, test = FashionMNIST(root=source, train=True), FashionMNIST(root=source, train=False)

    def subset(size: int, flag: str) -> torch.Tensor:
        try:
            return balanced_subset(train.labels, size, seed=0)
        except ValueError as e:
            raise SystemExit(f"{flag} {size}: {e} in {source}'s training split; choose a smaller {flag}") from None

    if "classification" in args.tracks:  # the folders of the tracks asked for (those of the others stay)
        sub = subset(args.train_size, "--train-size")
        n_attacked = max(min(args.attack_samples, len(test)), len(test.labels.unique()))
        try:
            attacked = balanced_subset(test.labels, n_attacked, seed=0)
        except ValueError:  # a test split too unbalanced for a balanced attacked subset: its own order
            attacked = torch.arange(0)
        rest = torch.ones(len(test), dtype=torch.bool)
        rest[attacked] = False
        order = torch.cat([attacked, rest.nonzero().flatten()])
        _write_split(folders["train"], "train", train.images[sub], train.labels[sub])
        _write_split(folders["train"], "t10k", test.images[order], test.labels[order])
        for split in ("train", "t10k"):
            _write_split(folders["train_as_test"], split, train.images[sub], train.labels[sub])
    if "localization" in args.tracks:
        loc = subset(args.loc_train_size, "--loc-train-size")
        _write_split(folders["placed"], "train", train.images[loc], train.labels[loc])
        _write_split(folders["placed"], "t10k", test.images, test.labels)
    write_text(done, json.dumps(want) + "\n")
    return folders


# ----------------------------------------------------------------------------------------------------
# One run: the command lines of mixkit-train and mixkit-eval


@dataclass(frozen=True)
class Run:
    """One (track, method, seed): its run directory and the tools' command lines."""

    track: str
    method: str
    seed: int
    run_dir: Path
    train_argv: tuple[str, ...]
    eval_argvs: tuple[tuple[str, Path], ...]  # (argv, the JSON it writes), in order; the last marks the run done

    @property
    def done(self) -> bool:
        return self.eval_argvs[-1][1].is_file()


def ood_flag() -> tuple[list[str], str]:
    """The ``--ood`` arguments mixkit-eval accepts for the wanted sets, or ([], why not)."""
    from mixkit.eval.cli import build_parser as eval_parser

    action = next((a for a in eval_parser()._actions if "--ood" in a.option_strings), None)
    if action is None:
        return [], "not available: this mixkit-eval has no --ood flag"
    sets = [s for s in OOD_WANTED if action.choices is None or s in action.choices]
    if not sets:
        return [], f"not available: mixkit-eval --ood offers {sorted(action.choices)}, none of {list(OOD_WANTED)}"
    many = action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)
    return ["--ood", *(sets if many else sets[:1])], ""


def plan_runs(args: argparse.Namespace, data: dict[str, Path]) -> list[Run]:
    """Every run, seed-major (each method's first seed finishes before any second seed starts)."""
    ood_args, _ = ood_flag()
    common = ["--model", args.model, "--model-kwargs", f"base_width={args.base_width}", "-b", str(args.batch_size),
              "--lr", str(args.lr), "--weight-decay", str(args.weight_decay), "--warmup-epochs",
              str(args.warmup_epochs), "--sched", "cosine", "--sched-on-updates", "--opt", "sgd", "--momentum", "0.9",
              "--val-split", "", "--workers", "0", "--checkpoint-hist", "1", "--no-progress"]
    if str(args.device).startswith("cpu"):
        common.append("--cpu")
    base = ["--no-progress", "--device", str(args.device)]
    evaluation = [*base, *(["--limit", str(args.eval_limit)] if args.eval_limit else [])]
    runs = []
    for seed in args.seeds:
        for track in args.tracks:
            for method in args.methods:
                out = args.work_dir / "runs" / track
                name = f"{method}-seed{seed}"
                run_dir = out / name
                mix = [] if method == NONE else ["--mixup", method]
                if track == "classification":
                    train = ["--dataset", "fashion_mnist", "--data-dir", str(data["train"]), "--img-size",
                             str(args.img_size), "--epochs", str(args.epochs)]
                    evals = (
                        ([str(run_dir), *evaluation, "--data-dir", str(data["train_as_test"]), "--no-attacks",
                          "--output", str(run_dir / "eval_train.json"), "--diagram",
                          str(run_dir / "reliability_train.png")], run_dir / "eval_train.json"),
                        ([str(run_dir), *evaluation, "--attack-samples", str(args.attack_samples), "--eps",
                          str(args.eps), "--pgd-steps", str(args.pgd_steps), *ood_args], run_dir / "eval.json"),
                    )
                else:
                    train = ["--dataset", "placed_fashion_mnist", "--data-dir", str(data["placed"]), "--img-size",
                             str(args.loc_img_size), "--epochs", str(args.loc_epochs)]
                    loc = ["--localization", "placed", "--no-attacks", "--limit", str(args.loc_limit)]
                    if args.loc_holdout is not None:
                        loc += ["--loc-holdout", str(args.loc_holdout)]
                    evals = (([str(run_dir), *base, *loc], run_dir / "eval.json"),)
                argv = [*train, *common, *mix, "--seed", str(seed), "--output", str(out), "--experiment", name]
                runs.append(Run(track, method, seed, run_dir, tuple(argv),
                                tuple((tuple(a), p) for a, p in evals)))
    return runs


def execute(run: Run, threads: int) -> dict[str, Any]:
    """Trains (unless its weights exist) and evaluates (each step unless its JSON exists) one run.

    Output of both tools goes to ``<run_dir>.log``. Raises what the tools raise, with the log's tail.
    """
    import torch

    torch.set_num_threads(threads)
    from mixkit.eval.cli import main as eval_main
    from mixkit.train import parse_args as train_parse_args
    from mixkit.train import train

    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run.run_dir.with_suffix(".log")
    timing_file = run.run_dir.with_suffix(".timing.json")
    timings: dict[str, Any] = json.loads(timing_file.read_text()) if timing_file.is_file() else {}

    def step(name: str, fn: Any) -> Any:
        # Wall and CPU seconds of this worker process per step (one torch thread: CPU time is the work done,
        # whatever else the machine runs), kept beside the run so that a resumed study still has them.
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        timings[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                         "loadavg_1min_end": load_average()}
        write_text(timing_file, json.dumps(timings, indent=1) + "\n")
        return out

    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        if not (run.run_dir / "model.safetensors").is_file():
            if run.run_dir.exists():  # an interrupted training: start it again
                shutil.rmtree(run.run_dir)
            print("$ mixkit-train " + " ".join(_quote(a) for a in run.train_argv), flush=True)
            step("train", lambda: train(train_parse_args(list(run.train_argv))))
        for argv, output in run.eval_argvs:
            if output.is_file():
                continue
            print("$ mixkit-eval " + " ".join(_quote(a) for a in argv), flush=True)
            rc = step(output.stem, lambda argv=argv: eval_main(list(argv)))
            if rc != 0:
                raise RuntimeError(f"mixkit-eval exited with {rc}")
    return timings


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _log_tail(run: Run, lines: int = 15) -> str:
    log = run.run_dir.with_suffix(".log")
    return "\n".join(log.read_text().splitlines()[-lines:]) if log.is_file() else ""


# ----------------------------------------------------------------------------------------------------
# Reading a run back: the metrics of its eval files


def ood_metrics(report: dict[str, Any]) -> dict[str, float]:
    """eval.json's ``ood`` (set -> score -> metric) as flat ``ood_<set>_<score>_<metric>`` numbers in percent."""
    out = {}
    for ood_set, scores in (report.get("ood") or {}).items():
        if not isinstance(scores, dict):
            continue
        for score, values in scores.items():
            if not isinstance(values, dict):
                continue
            for metric in OOD_METRICS:
                if isinstance(values.get(metric), int | float):
                    out[f"ood_{ood_set}_{score}_{metric}"] = 100.0 * float(values[metric])
    return out


def read_run(run: Run) -> dict[str, Any]:
    """The metrics of a finished run (from its eval JSON files and summary.json)."""
    metrics: dict[str, float | None] = {}
    record: dict[str, Any] = {"track": run.track, "method": run.method, "seed": run.seed, "run_dir": str(run.run_dir),
                              "mixkit_train": ["mixkit-train", *run.train_argv],
                              "mixkit_eval": [["mixkit-eval", *a] for a, _ in run.eval_argvs]}
    summary = run.run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        record.update(train_seconds=s.get("train_seconds"), process_cpu_seconds=s.get("process_cpu_seconds"),
                      train_loss_per_epoch=[r.get("train_loss") for r in s.get("epochs", [])])
    timing_file = run.run_dir.with_suffix(".timing.json")
    if timing_file.is_file():
        record["steps"] = json.loads(timing_file.read_text())
    report = json.loads((run.run_dir / "eval.json").read_text())
    if run.track == "classification":
        m, a = report["metrics"], report.get("attacks") or {}
        metrics.update(top1=m["top1"], top5=m["top5"], nll=m["nll"], ece=100.0 * m["ece"],
                       fgsm_top1=a.get("fgsm_top1"), pgd_top1=a.get("pgd_top1"))
        record["attacked_images"] = a.get("num_samples")
        record["test_images"] = m["num_samples"]
        train_eval = json.loads((run.run_dir / "eval_train.json").read_text())
        metrics["train_top1"] = train_eval["metrics"]["top1"]
        record["train_images"] = train_eval["metrics"]["num_samples"]
        metrics.update(ood_metrics(report))
    else:
        loc = report["localization"]
        metrics.update(placed_top1=report["metrics"]["top1"], loc_max_box_acc=loc["max_box_acc"],
                       loc_max_box_acc_v2=loc["max_box_acc_v2"], loc_top1_loc=loc["top1_loc"],
                       loc_gt_known_loc=loc["gt_known_loc"])
        record["localization_test_images"] = loc["num_test"]
    record["metrics"] = metrics
    return record


def merge_tracks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (method, seed) with the metrics of both tracks (a seed pairs both)."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        m = merged.setdefault((r["method"], r["seed"]), {"method": r["method"], "seed": r["seed"], "metrics": {},
                                                          "tracks": {}})
        m["metrics"].update(r["metrics"])
        m["tracks"][r["track"]] = {k: v for k, v in r.items() if k not in ("method", "seed", "metrics", "track")}
    return list(merged.values())


def metric_directions(runs: list[dict[str, Any]]) -> dict[str, bool]:
    """Every metric the runs have, in report order, with whether higher is better."""
    seen = {k for r in runs for k, v in r["metrics"].items() if v is not None}
    out = {k: hi for k, (_, hi) in METRICS.items() if k in seen}
    for k in sorted(seen - set(out)):
        if k.startswith("ood_"):
            out[k] = OOD_METRICS[k.rsplit("_", 1)[1]][1]
    return out


def label(metric: str) -> str:
    if metric in METRICS:
        return METRICS[metric][0]
    if metric.startswith("ood_"):
        _, ood_set, rest = metric.split("_", 2)
        score, name = rest.rsplit("_", 1)
        return f"OOD {ood_set} {score} {OOD_METRICS[name][0]}"
    return metric


def summarise(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Per-method statistics, alignmixup's paired deltas, and whether `none` fits its training set."""
    directions = metric_directions(runs)
    none_fit = [r["metrics"].get("train_top1") for r in runs if r["method"] == NONE]
    none_fit = [v for v in none_fit if v is not None]
    return {"metrics": {k: {"label": label(k), "higher_is_better": hi} for k, hi in directions.items()},
            "per_method": per_method_stats(runs, methods, list(directions)),
            "paired_vs_" + REFERENCE: paired_deltas(runs, methods, directions, reference=REFERENCE),
            "none_train_top1": none_fit,
            "none_fits_training_set": bool(none_fit) and min(none_fit) >= FIT_TARGET}


# ----------------------------------------------------------------------------------------------------
# The report: markdown table and plot


def _cell(stat: dict[str, Any] | None, fmt: str = "{:.2f}") -> str:
    if not stat:
        return "—"
    return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"


def markdown(result: dict[str, Any]) -> str:
    cfg, summary = result["config"], result["summary"]
    per, paired = summary["per_method"], summary["paired_vs_" + REFERENCE]
    have = set(summary["metrics"])
    lines = [f"# Study: preset `{cfg['preset']}`", ""]
    if result.get("partial"):
        lines += [f"**Partial result**: {result['finished']} of {result['planned']} runs had finished when this "
                  "was written.", ""]
    lines += [f"Fashion-MNIST, `{cfg['model']}` base width {cfg['base_width']}; classification: {cfg['train_size']} "
              f"training images at {cfg['img_size']} px, {cfg['epochs']} epochs; localization: {cfg['loc_train_size']} placed objects at "
              f"{cfg['loc_img_size']} px, {cfg['loc_epochs']} epochs; batch {cfg['batch_size']}, lr {cfg['lr']}, "
              f"seeds {', '.join(map(str, cfg['seeds']))}; last epoch. Test: the 10,000-image test split; FGSM and "
              f"PGD-{cfg['pgd_steps']} at eps {cfg['eps'] * 255:.0f}/255 on {cfg['attack_samples']} of its images. "
              "Mean ± std over seeds.", ""]
    for title, keys in (("Classification", [k for k in TABLE_METRICS if k in have]),
                        ("OOD detection", [k for k in summary["metrics"] if k.startswith("ood_")]),
                        ("Localization (Placed Fashion-MNIST)", [k for k in LOC_TABLE_METRICS if k in have])):
        if not keys:
            continue
        lines += [f"## {title}", "", "| method | seeds | " + " | ".join(label(k) for k in keys) + " |",
                  "|---|---:|" + "---:|" * len(keys)]
        for m, s in per.items():
            n = max((len(s[k]["values"]) for k in keys if k in s), default=0)
            lines.append(f"| {m} | {n} | " + " | ".join(_cell(s.get(k)) for k in keys) + " |")
        lines.append("")
    if not any(k.startswith("ood_") for k in summary["metrics"]):
        lines += [f"OOD detection: {result.get('ood', 'not measured')}.", ""]
    if paired:
        keys = [k for k in (*TABLE_METRICS, *LOC_TABLE_METRICS) if k in have] + \
               [k for k in summary["metrics"] if k.startswith("ood_") and k.endswith("_auroc")]
        lines += [f"## Paired by seed: {REFERENCE} minus each method", "",
                  "Mean ± std of the per-seed differences; (wins/seeds): seeds where alignmixup is better "
                  "(higher, or lower for ECE and FPR95).", "",
                  "| vs | " + " | ".join(f"Δ {label(k)}" for k in keys) + " |", "|---|" + "---:|" * len(keys)]
        for m, p in paired.items():
            cells = [f"{p[k]['mean']:+.2f} ± {p[k]['std']:.2f} ({p[k]['wins']}/{len(p[k]['seeds'])})" if k in p
                     else "—" for k in keys]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    fit = summary["none_train_top1"]
    if fit:
        lines += [f"Training top-1 of `none` in its last epoch: {', '.join(f'{v:.2f}' for v in fit)} "
                  f"(target >= {FIT_TARGET:.0f}%: {'met' if summary['none_fits_training_set'] else 'NOT met'}).", ""]
    mach, timing = result["machine"], result["timing"]
    lines += [f"Measured on {mach.get('gpu') or mach['cpu']} ({mach['cores']} cores, torch {mach['torch']}), "
              f"{cfg['jobs']} worker(s) of {cfg['threads']} torch thread(s), commit {result['git'].get('commit', '?')[:10]}"
              f"; CPU time of the {timing['runs_timed']} runs with step timings: {timing['cpu_s_total'] / 60:.1f} "
              f"CPU-minutes (training, evaluations); this invocation: {timing['invocation_wall_s'] / 60:.1f} min of wall "
              "time, "
              f"load average {result['uptime_before']} before, {result['uptime_after']} after."]
    if result.get("failed"):
        lines += ["", "Failed runs (rerun the same command to retry them): "
                  + "; ".join(f"{f['track']} {f['method']} seed {f['seed']}" for f in result["failed"]) + "."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    summary = result["summary"]
    per = summary["per_method"]
    keys = [k for k in (*TABLE_METRICS, *LOC_TABLE_METRICS) if k in summary["metrics"]] + \
           [k for k in summary["metrics"] if k.startswith("ood_") and k.endswith("_auroc")][:3]
    plt = pyplot()
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), dpi=100, squeeze=False)
    try:
        for ax in axes.flat[len(keys):]:
            ax.axis("off")
        for ax, k in zip(axes.flat, keys, strict=False):
            methods = [m for m in per if k in per[m]]
            means = [per[m][k]["mean"] for m in methods]
            stds = [per[m][k]["std"] for m in methods]
            colors = ["tab:red" if m == REFERENCE else "tab:gray" if m == NONE else "tab:blue" for m in methods]
            ax.bar(range(len(methods)), means, yerr=stds, color=colors, alpha=0.6, capsize=3)
            for i, m in enumerate(methods):
                ax.plot([i] * len(per[m][k]["values"]), per[m][k]["values"], "k.", ms=4)
            ax.set_xticks(range(len(methods)), methods, rotation=50, ha="right", fontsize=8)
            ax.set_title(label(k) + ("" if summary["metrics"][k]["higher_is_better"] else " (lower is better)"),
                         fontsize=9)
            vals = [v for m in methods for v in per[m][k]["values"]]
            pad = max(max(vals) - min(vals), 0.5) * 0.3
            ax.set_ylim(max(0.0, min(vals) - pad), max(vals) + pad)
        cfg = result["config"]
        fig.suptitle(f"Study '{cfg['preset']}': {cfg['model']} w{cfg['base_width']}, {cfg['train_size']} images x "
                     f"{cfg['epochs']} epochs, seeds {cfg['seeds']} (bars: mean ± std; dots: seeds)", fontsize=10)
        fig.tight_layout()
    except Exception:
        plt.close(fig)
        raise
    save_figure(fig, path, dpi=100)


# ----------------------------------------------------------------------------------------------------
# The study


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("preset", "model", "base_width", "img_size", "train_size", "epochs", "batch_size", "lr", "weight_decay",
            "warmup_epochs", "loc_train_size", "loc_epochs", "loc_img_size", "attack_samples", "eps", "pgd_steps",
            "eval_limit", "loc_limit", "loc_holdout", "device", "jobs", "threads", "methods", "seeds", "tracks")
    cfg = {k: getattr(args, k) for k in keys}
    cfg.update(source_dir=str(args.source_dir) if args.source_dir else "Debian's dataset-fashion-mnist",
               work_dir=str(args.work_dir), subsets="class-balanced, drawn with seed 0 from the training split")
    return cfg


RUN_SETTINGS = ("model", "base_width", "img_size", "train_size", "epochs", "batch_size", "lr", "weight_decay",
                "warmup_epochs", "loc_train_size", "loc_epochs", "loc_img_size", "attack_samples", "eps", "pgd_steps",
                "eval_limit", "loc_limit", "loc_holdout", "source_dir")
"""What a run's numbers depend on: a work directory holds runs of one setting only."""


def check_work_dir(args: argparse.Namespace) -> None:
    """Records the run settings in ``<work_dir>/settings.json`` on first use; refuses other settings later, so that
    a resumed study never mixes runs of two settings (methods, seeds, tracks, jobs and threads may change)."""
    now = json.loads(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                                 if k in RUN_SETTINGS}))
    path = args.work_dir / "settings.json"
    if not path.is_file():
        if args.report_only:
            raise SystemExit(f"--report-only: {args.work_dir} holds no study (no settings.json); run the study first")
        write_text(path, json.dumps(now, indent=1) + "\n")
        return
    old = json.loads(path.read_text())
    diff = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
    if diff:
        raise SystemExit(f"{args.work_dir} holds runs made with other settings ("
                         + ", ".join(f"{k}: {old.get(k)!r} there, {now.get(k)!r} now" for k in diff)
                         + "): pass the same settings to continue it, or another --work-dir (or --tag)")


def cpu_costs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU seconds of the runs (training and evaluations, from the timing files; training from summary.json
    where a run has no timing of it): in all, and per run by track and method (mean over seeds)."""
    per: dict[str, dict[str, list[float]]] = {}
    total, timed = 0.0, 0
    for r in records:
        steps = r.get("steps") or {}
        # The step's own count includes set-up (data, model, compilation); summary.json's only the epochs.
        train = steps["train"]["cpu_s"] if "train" in steps else r.get("process_cpu_seconds")
        if train is None:
            continue
        cpu = train + sum(v["cpu_s"] for k, v in steps.items() if k != "train")
        per.setdefault(r["track"], {}).setdefault(r["method"], []).append(cpu)
        total += cpu
        timed += 1
    return {"runs_timed": timed, "cpu_s_total": total,
            "cpu_s_per_run": {t: {m: sum(v) / len(v) for m, v in ms.items()} for t, ms in per.items()}}


def collect(runs: list[Run]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records of the finished runs, records of those whose eval.json is unreadable)."""
    done, broken = [], []
    for run in runs:
        if not run.done:
            continue
        try:
            done.append(read_run(run))
        except (KeyError, ValueError, FileNotFoundError, TypeError) as e:
            broken.append({"track": run.track, "method": run.method, "seed": run.seed, "error": repr(e)})
    return done, broken


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    if str(args.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device} (the gpu preset's) needs a CUDA device; use --preset cpu")
    json_path = result_path(args.out_dir, f"study-{args.preset}", tag=args.tag)
    check_work_dir(args)
    data = prepare_data(args) if not args.report_only else data_folders(args)
    runs = plan_runs(args, data)
    _, ood_note = ood_flag()
    command = "python benchmarks/study.py " + " ".join(sys.argv[1:] if argv is None else argv)
    uptime_before, start = uptime_load(), time.perf_counter()
    failed: list[dict[str, Any]] = []

    def save() -> dict[str, Any]:
        import torch

        records, broken = collect(runs)
        merged = merge_tracks(records)
        order = {m: i for i, m in enumerate(args.methods)}
        merged.sort(key=lambda r: (order[r["method"]], r["seed"]))
        rec = machine(torch.device(args.device))
        rec.update(loadavg_1min_now=load_average(), hostname=platform.node())
        result = {"benchmark": "study", "command": command, "git": git_state(), "config": config_of(args),
                  "partial": len(records) < len(runs), "planned": len(runs), "finished": len(records),
                  "ood": ood_note or "measured with mixkit-eval --ood",
                  "failed": failed + broken, "machine": rec, "uptime_before": uptime_before, "uptime_after": uptime_load(),
                  "timing": {"invocation_wall_s": time.perf_counter() - start, **cpu_costs(records)},
                  "runs": merged, "summary": summarise(merged, args.methods)}
        write_json(json_path, result)
        if merged:
            write_text(json_path.with_suffix(".md"), markdown(result))
            plot(result, json_path.with_suffix(".png"))
        return result

    todo = [] if args.report_only else [r for r in runs if not r.done]
    if todo:
        print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished (under {args.work_dir}); "
              f"{len(todo)} to run", file=sys.stderr)
        bar = tqdm(total=len(todo), desc=f"study {args.preset} (runs)", unit="run", disable=args.no_progress)

        def finished(run: Run, error: BaseException | None) -> None:
            if error is not None:
                failed.append({"track": run.track, "method": run.method, "seed": run.seed, "error": repr(error),
                               "log": str(run.run_dir.with_suffix(".log")), "log_tail": _log_tail(run)})
                bar.write(f"{run.track} {run.method} seed {run.seed}: FAILED ({error!r}); see "
                          f"{run.run_dir.with_suffix('.log')}")
            else:
                try:
                    m = read_run(run)["metrics"]
                except (KeyError, ValueError, FileNotFoundError, TypeError) as e:  # save() records it as failed
                    bar.write(f"{run.track} {run.method} seed {run.seed}: its eval files are unreadable ({e!r})")
                else:
                    bar.write(f"{run.track:>14} {run.method:>16} seed {run.seed}: "
                              + "  ".join(f"{k} {v:.2f}" for k, v in m.items() if v is not None and "ood" not in k))
            bar.update(1)
            save()

        if args.jobs == 1:
            for run in todo:
                try:
                    execute(run, args.threads)
                except Exception as e:  # keep the other runs; rerunning the command retries this one
                    finished(run, e)
                else:
                    finished(run, None)
        else:
            os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # inherited by the spawned workers
            from mixkit.parent_death import exit_with_parent

            # Spawned (fresh interpreters: no OpenMP state from this one); they die with this process, so a
            # killed study leaves no worker training on.
            with ProcessPoolExecutor(max_workers=min(args.jobs, len(todo)), mp_context=mp.get_context("spawn"),
                                     initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
                pending: dict[Future, Run] = {pool.submit(execute, run, args.threads): run for run in todo}
                while pending:
                    ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in ready:
                        finished(pending.pop(fut), fut.exception())
        bar.close()
    result = save()
    if failed:
        print(f"{len(failed)} run(s) failed; run the same command again to retry them", file=sys.stderr)
    if result["runs"]:
        print(markdown(result))
    print(f"wrote {json_path}" + (f", {json_path.with_suffix('.md')}, {json_path.with_suffix('.png')}"
                                  if result["runs"] else " (no finished run yet)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
