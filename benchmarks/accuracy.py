"""Accuracy study: every mixing method, one model and schedule, several seeds, on real Fashion-MNIST.

Methods: none, mixup, cutmix, manifold, alignmixup, alignmixup_paper (each from ``mixkit.create_mixup``
with its preset's defaults; 'none' is timm's Mixup switched off, i.e. label-smoothed one-hot targets).
Data: Debian's offline Fashion-MNIST (``mixkit.datasets.FashionMNIST``); a class-balanced training
subset drawn with a fixed seed (the same for every run) and the full 10,000-image test set.
Model: ``preact_resnet_tiny_cifar`` (mixkit.models: PreAct ResNet, CIFAR stem, one block per stage),
1 input channel, 10 classes. Schedule: timm's SGD (Nesterov momentum 0.9), cosine decay per step with
a short warm-up (timm's CosineLRScheduler), random horizontal flips, SoftTargetCrossEntropy on the
mixing function's soft targets, the mix applied right before the forward as in timm's train.py.

The model takes pixels in [0, 1] and normalises inside (``mixkit.eval.NormalizedModel``), so the
attacks' epsilon is in pixels; input mixup and CutMix mix the pixels (the same mixes as on normalised
tensors, since normalisation is affine per channel), feature methods mix inside the network.

Metrics are those of the LAST epoch (never the best epoch on the test set), from ``mixkit.eval``:
top-1, ECE (15 bins), FGSM and PGD accuracy (L-inf, pixel space) on a fixed class-balanced subset of
the test set. Per method: mean and sample standard deviation over seeds. Paired comparison: for each
seed, alignmixup minus each other method (same seed: same initial weights, same data order and the
same attacked images), mean and std of the differences and the number of seeds alignmixup wins.

Runs go to ``--jobs`` worker processes with one torch thread each: on a small CPU two single-thread
processes do more work than one process with two threads, whose OpenMP threads spin against each
other (and against everyone else's) on a shared machine. The machine's load average is recorded at
the start and end of every run.

Writes benchmarks/results/accuracy-<device>[-<tag>].json, .md and .png (atomically).

    python benchmarks/accuracy.py                      # the committed CPU study
    python benchmarks/accuracy.py --preset gpu         # full training set, PreActResNet-18, 30 epochs
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixkit.mix import list_mixups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS_DIR,
    balanced_subset,
    common_parser,
    git_state,
    load_average,
    machine,
    pyplot,
    result_path,
    save_figure,
    uptime_load,
    write_json,
    write_text,
)

METHODS = ("none", *list_mixups())  # every registered method, and no mixing
REFERENCE = "alignmixup"
# Fashion-MNIST training-set statistics (pixels in [0, 1]).
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
PRESETS: dict[str, dict[str, Any]] = {
    # Sized for the shared 2-core CPU (see docs/evaluation.md): 85 s of CPU time per run on average, so
    # 6 methods x 3 seeds need about 13 minutes of two quiet cores.
    "cpu": dict(model="preact_resnet_tiny_cifar", base_width=8, train_size=10_000, epochs=5, batch_size=128,
                lr=0.1, weight_decay=5e-4, warmup_epochs=0.5, seeds=3, attack_samples=1000, device="cpu"),
    # The larger version for a GPU: the full training set, PreActResNet-18, 30 epochs.
    "gpu": dict(model="preact_resnet18_cifar", base_width=64, train_size=60_000, epochs=30, batch_size=128,
                lr=0.1, weight_decay=5e-4, warmup_epochs=1.0, seeds=3, attack_samples=10_000, device="cuda"),
}
HIGHER_IS_BETTER = {"top1": True, "ece": False, "fgsm_top1": True, "pgd_top1": True, "nll": False, "top5": True}
TABLE_METRICS = ("top1", "ece", "fgsm_top1", "pgd_top1")
LABELS = {"top1": "top-1 %", "ece": "ECE %", "fgsm_top1": "FGSM top-1 %", "pgd_top1": "PGD top-1 %",
          "nll": "NLL", "top5": "top-5 %"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_parser(out_dir=RESULTS_DIR)])
    p.set_defaults(device=None)  # the preset's device unless --device is given
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="cpu: the 2-core CPU study (default); gpu: full training set, PreActResNet-18, 30 epochs")
    p.add_argument("--methods", nargs="+", default=list(METHODS),
                   help=f"methods to compare (default: {' '.join(METHODS)}); unregistered ones are skipped "
                        "with a note")
    p.add_argument("--seeds", type=int, help="seeds per method (preset: 3)")
    p.add_argument("--epochs", type=int, help="training epochs (preset)")
    p.add_argument("--train-size", type=int, help="class-balanced training subset size (preset)")
    p.add_argument("--base-width", type=int, help="channels of the model's first stage (preset)")
    p.add_argument("--batch-size", type=int, help="training batch size (preset)")
    p.add_argument("--lr", type=float, help="peak SGD learning rate (preset: 0.1 at batch 128)")
    p.add_argument("--attack-samples", type=int, help="test images attacked with FGSM and PGD (preset)")
    p.add_argument("--eps", type=float, default=8 / 255, help="L-inf attack radius in pixels (default 8/255)")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (default 10; step 2.5*eps/steps)")
    p.add_argument("--jobs", type=int, default=2, help="parallel worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--only-seeds", type=int, nargs="+", metavar="SEED",
                   help="run only these seeds (e.g. a second process sharing the study, with its own --tag)")
    p.add_argument("--reuse-from", type=Path, nargs="+", default=[], metavar="JSON",
                   help="with --reuse: also take the runs of these result files (same settings required)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: re-summarise the existing JSON and rewrite its table and plot")
    p.add_argument("--reuse", action="store_true",
                   help="keep the runs already in the output JSON whose settings match, and run only the "
                        "missing (method, seed) pairs (after an interruption, or to add a method)")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for name in ("seeds", "epochs", "train_size", "base_width", "batch_size", "attack_samples", "jobs", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return args


def load_data(train_size: int, attack_samples: int) -> dict[str, torch.Tensor]:
    """Pixels in [0, 1] as (N, 1, 28, 28) float tensors; the test set ordered attacked-subset first."""
    from mixkit.datasets import FashionMNIST

    train, test = FashionMNIST(train=True), FashionMNIST(train=False)
    tr = balanced_subset(train.labels, train_size, seed=0)
    attacked = balanced_subset(test.labels, min(attack_samples, len(test)), seed=0)
    rest = torch.ones(len(test), dtype=torch.bool)
    rest[attacked] = False
    order = torch.cat([attacked, rest.nonzero().flatten()])
    return {"x_train": train.images[tr].unsqueeze(1).float() / 255, "y_train": train.labels[tr],
            "x_test": test.images[order].unsqueeze(1).float() / 255, "y_test": test.labels[order]}


def make_mixup(method: str, model: torch.nn.Module) -> Any:
    from mixkit import create_mixup

    if method == "none":
        fn = create_mixup("mixup", num_classes=10)
        fn.mixup_enabled = False  # timm's Mixup, off: label-smoothed one-hot targets
        return fn
    return create_mixup(method, model=model, num_classes=10)


def train_and_evaluate(cfg: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """One run: seed, train for cfg['epochs'] epochs, evaluate the last epoch's weights."""
    torch.set_num_threads(cfg["threads"])
    import timm
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    import mixkit  # noqa: F401  (registers mixkit's timm models)
    from mixkit.eval import AttackConfig, NormalizedModel, evaluate

    start, load_start = time.perf_counter(), load_average()
    cpu_start = time.process_time()
    method, seed, device = cfg["method"], cfg["seed"], torch.device(cfg["device"])
    data = load_data(cfg["train_size"], cfg["attack_samples"])
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (timm's Mixup and mixkit draw lam from NumPy's global generator)
    net = timm.create_model(cfg["model"], in_chans=1, num_classes=10, base_width=cfg["base_width"])
    model = NormalizedModel(net, FMNIST_MEAN, FMNIST_STD).to(device)
    mixup_fn = make_mixup(method, net)
    optimizer = create_optimizer_v2(model, opt="sgd", lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                    momentum=0.9)
    x_train, y_train = data["x_train"].to(device), data["y_train"].to(device)
    n, bs = len(y_train), cfg["batch_size"]
    steps_per_epoch = n // bs
    total = steps_per_epoch * cfg["epochs"]
    scheduler = CosineLRScheduler(optimizer, t_initial=total, warmup_t=int(cfg["warmup_epochs"] * steps_per_epoch),
                                  warmup_lr_init=cfg["lr"] / 10, lr_min=0.0, t_in_epochs=False)
    loss_fn = SoftTargetCrossEntropy()
    order_gen = torch.Generator().manual_seed(seed)  # the same data order for every method of a seed
    step, losses = 0, []
    for _epoch in range(cfg["epochs"]):
        model.train()
        perm = torch.randperm(n, generator=order_gen)
        flips = torch.rand(n, generator=order_gen) < 0.5
        epoch_loss = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            x, y = x_train[idx], y_train[idx]
            f = flips[idx].to(device)
            x = torch.where(f[:, None, None, None], x.flip(3), x)
            x, target = mixup_fn(x, y)
            loss = loss_fn(model(x), target)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"{method} seed {seed}: loss {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            epoch_loss += loss.item()
        losses.append(epoch_loss / steps_per_epoch)
        if progress is not None:
            progress.put(1)
    train_s = time.perf_counter() - start
    x_test, y_test = data["x_test"], data["y_test"]
    batches = [(x_test[i:i + 500], y_test[i:i + 500]) for i in range(0, len(y_test), 500)]
    attack = AttackConfig(eps=cfg["eps"], pgd_steps=cfg["pgd_steps"], max_samples=cfg["attack_samples"], seed=0)
    result = evaluate(model, batches, attack=attack, device=device)
    if hasattr(mixup_fn, "remove"):
        mixup_fn.remove()
    metrics = {**result.metrics, "ece": 100 * result.metrics["ece"]}
    metrics.update({k: result.attacks[k] for k in ("fgsm_top1", "pgd_top1")})
    return {"method": method, "seed": seed, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "metrics": metrics, "attack_clean_top1": result.attacks["clean_top1"],
            "train_loss_per_epoch": losses, "train_s": train_s, "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu_start, "loadavg_1min_start": load_start,
            "loadavg_1min_end": load_average()}


def _worker(cfg: dict[str, Any], queue: Any) -> dict[str, Any]:
    return train_and_evaluate(cfg, queue)


def available_methods(methods: list[str]) -> tuple[list[str], list[str]]:
    from mixkit import list_mixups

    known = set(list_mixups()) | {"none"}
    return [m for m in methods if m in known], [m for m in methods if m not in known]


def summarise(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Mean and std per method, and alignmixup's paired differences against every other method."""
    by = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"]) for m in methods}
    by = {m: rs for m, rs in by.items() if rs}  # a partial result summarises what has finished
    stats: dict[str, Any] = {}
    for m, rs in by.items():
        stats[m] = {"n": len(rs), "seeds": [r["seed"] for r in rs]}
        for k in HIGHER_IS_BETTER:
            vals = [r["metrics"][k] for r in rs]
            stats[m][k] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                           "values": vals}
    paired: dict[str, Any] = {}
    if REFERENCE in by:
        ref = {r["seed"]: r["metrics"] for r in by[REFERENCE]}
        for m in methods:
            if m == REFERENCE:
                continue
            if m not in by:
                continue
            other = {r["seed"]: r["metrics"] for r in by[m]}
            seeds = sorted(set(ref) & set(other))
            paired[m] = {"seeds": seeds}
            for k, higher in HIGHER_IS_BETTER.items():
                diffs = [ref[s][k] - other[s][k] for s in seeds]
                wins = sum((d > 0) if higher else (d < 0) for d in diffs)
                paired[m][k] = {"mean": statistics.fmean(diffs),
                                "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                                "diffs": diffs, "wins": wins}
    return {"per_method": stats, "paired_vs_" + REFERENCE: paired}


def markdown(result: dict[str, Any]) -> str:
    cfg, summary = result["config"], result["summary"]
    methods = list(summary["per_method"])
    lines = [f"Fashion-MNIST accuracy study ({cfg['model']}, base_width {cfg['base_width']}; "
             f"{cfg['train_size']} training images, {cfg['epochs']} epochs, batch {cfg['batch_size']}; "
             f"{cfg['seeds']} seeds; last epoch; test set 10,000 images, attacks on {cfg['attack_samples']} of "
             f"them at eps {cfg['eps']:.4f} ({cfg['eps'] * 255:.0f}/255), PGD {cfg['pgd_steps']} steps with "
             "a random start).", "",
             "| method | seeds | " + " | ".join(LABELS[k] for k in TABLE_METRICS) + " |",
             "|---|---:|" + "---:|" * len(TABLE_METRICS)]
    if result.get("partial"):
        lines[:0] = [f"**Partial result**: {len(result['runs'])} of {cfg['seeds'] * len(cfg['methods'])} runs "
                     "finished when this was written.", ""]
    for m in methods:
        s = summary["per_method"][m]
        lines.append(f"| {m} | {s['n']} | "
                     + " | ".join(f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f}" for k in TABLE_METRICS) + " |")
    paired = summary.get("paired_vs_" + REFERENCE) or {}
    if paired:
        lines += ["", f"Paired per seed: {REFERENCE} minus each method (mean ± std of the differences; "
                  "wins: seeds where alignmixup is better, i.e. higher accuracy or lower ECE).", "",
                  "| vs | " + " | ".join(f"Δ {LABELS[k]} (wins)" for k in TABLE_METRICS) + " |",
                  "|---|" + "---:|" * len(TABLE_METRICS)]
        for m, p in paired.items():
            n = len(p["seeds"])
            lines.append(f"| {m} | " + " | ".join(
                f"{p[k]['mean']:+.2f} ± {p[k]['std']:.2f} ({p[k]['wins']}/{n})" for k in TABLE_METRICS) + " |")
    if result.get("skipped"):
        lines += ["", "Skipped (not registered in mixkit.create_mixup when this ran): "
                  + ", ".join(result["skipped"]) + "."]
    m, runs = result["machine"], result["runs"]
    cpu = [r["cpu_s"] for r in runs]
    wall = [r["wall_s"] for r in runs]
    loads = [v for r in runs for v in (r["loadavg_1min_start"], r["loadavg_1min_end"]) if v is not None]
    lines += ["", f"Measured on {m['cpu']} ({m['cores']} cores, torch {m['torch']}), one torch thread per worker "
              f"process. Per run: {statistics.fmean(cpu):.0f} s of CPU time on average (all {len(runs)} runs: "
              f"{sum(cpu) / 60:.0f} CPU-minutes, about {sum(cpu) / 120:.0f} minutes of two quiet cores) and "
              f"{min(wall):.0f}-{max(wall):.0f} s of wall time; the 1-min load average at the runs' starts and ends "
              f"was {min(loads):.1f}-{max(loads):.1f} (a shared machine). {len(result.get('invocations', []))} "
              "invocation(s) of the script measured these runs (commands, load and git state in the JSON)."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    per = result["summary"]["per_method"]
    methods = list(per)
    fig, axes = plt.subplots(1, len(TABLE_METRICS), figsize=(4 * len(TABLE_METRICS), 4), dpi=100)
    try:
        for ax, k in zip(axes, TABLE_METRICS, strict=True):
            means = [per[m][k]["mean"] for m in methods]
            stds = [per[m][k]["std"] for m in methods]
            colors = ["tab:red" if m == REFERENCE else "tab:blue" for m in methods]
            ax.bar(range(len(methods)), means, yerr=stds, color=colors, alpha=0.6, capsize=3)
            for i, m in enumerate(methods):
                vals = per[m][k]["values"]
                ax.plot([i] * len(vals), vals, "k.", ms=4)
            ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right")
            ax.set_title(LABELS[k] + (" (lower is better)" if not HIGHER_IS_BETTER[k] else ""))
            lo = min(min(per[m][k]["values"]) for m in methods)
            hi = max(max(per[m][k]["values"]) for m in methods)
            pad = max(hi - lo, 0.5) * 0.3
            ax.set_ylim(max(0.0, lo - pad), hi + pad)
        cfg = result["config"]
        fig.suptitle(f"Fashion-MNIST, {cfg['model']} w{cfg['base_width']}, {cfg['train_size']} train images, "
                     f"{cfg['epochs']} epochs, {cfg['seeds']} seeds (bars: mean ± std; dots: seeds)")
        fig.tight_layout()
    except Exception:
        plt.close(fig)
        raise
    save_figure(fig, path, dpi=100)


def render(result: dict[str, Any], json_path: Path) -> None:
    """Writes the table (.md) and the plot (.png) of a result next to its JSON."""
    if result["summary"]["per_method"]:
        write_text(json_path.with_suffix(".md"), markdown(result))
        plot(result, json_path.with_suffix(".png"))


def reusable_runs(path: Path, config: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs (and invocation records) of an earlier result file measured with the same settings.

    Methods, seeds, jobs and threads may differ; anything that changes a run's result may not.
    """
    import json

    if not path.is_file():
        return [], []
    old = json.loads(path.read_text())
    ignore = {"methods", "jobs", "threads", "seeds"}
    same = {k: v for k, v in old.get("config", {}).items() if k not in ignore}
    now = json.loads(json.dumps({k: v for k, v in config.items() if k not in ignore}))
    if same != now:
        diff = sorted(k for k in set(same) | set(now) if same.get(k) != now.get(k))
        raise SystemExit(f"--reuse: {path} was measured with other settings ({', '.join(diff)}); "
                         "remove it or use another --tag")
    return list(old.get("runs", [])), list(old.get("invocations", []))


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    json_path = result_path(args.out_dir, "accuracy", device=args.device, tag=args.tag)
    if args.report_only:
        import json

        if not json_path.is_file():
            raise SystemExit(f"--report-only: {json_path} does not exist; run the study first")
        result = json.loads(json_path.read_text())
        result["summary"] = summarise(result["runs"], result["config"]["methods"])
        write_json(json_path, result)
        render(result, json_path)
        print(markdown(result))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda (the gpu preset) needs a CUDA device; use --preset cpu")
    methods, skipped = available_methods(args.methods)
    for m in skipped:
        print(f"note: {m!r} is not registered in mixkit.create_mixup (yet); skipping it", file=sys.stderr)
    if REFERENCE not in methods:
        print(f"note: {REFERENCE!r} is not among the methods: no paired comparison", file=sys.stderr)
    cfg_keys = ("model", "base_width", "train_size", "epochs", "batch_size", "lr", "weight_decay", "warmup_epochs",
                "seeds", "attack_samples", "eps", "pgd_steps", "device", "jobs", "threads")
    config = {k: getattr(args, k) for k in cfg_keys}
    config.update(methods=methods, optimizer="timm sgd (nesterov, momentum 0.9)", schedule="cosine per step",
                  augmentation="random horizontal flip", mean=FMNIST_MEAN, std=FMNIST_STD,
                  pgd_step_size=2.5 * args.eps / args.pgd_steps, label_smoothing="each preset's default",
                  train_subset="class-balanced, seed 0, from the 60k training split",
                  attack_subset="class-balanced, seed 0, from the 10k test split")
    # Seed-major order: every method's first seed finishes before any second seed starts.
    runs_cfg = [{**config, "method": m, "seed": s} for s in range(args.seeds) for m in methods]
    runs, invocations = reusable_runs(json_path, config) if args.reuse else ([], [])
    for other in args.reuse_from if args.reuse else []:
        if not other.is_file():
            raise SystemExit(f"--reuse-from: {other} does not exist")
        more, more_invocations = reusable_runs(other, config)
        known = {(r["method"], r["seed"]) for r in runs}
        runs += [r for r in more if (r["method"], r["seed"]) not in known]
        invocations += more_invocations
    if args.only_seeds:
        runs_cfg = [c for c in runs_cfg if c["seed"] in set(args.only_seeds)]
    have = {(r["method"], r["seed"]) for r in runs}
    runs = [r for r in runs if r["method"] in methods and r["seed"] < args.seeds]
    todo = [c for c in runs_cfg if (c["method"], c["seed"]) not in have]
    if args.reuse:
        print(f"reusing {len(runs)} run(s) from {json_path}; {len(todo)} to run", file=sys.stderr)
    uptime_before, load_before = uptime_load(), load_average()
    command, git = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv), git_state()
    start = time.perf_counter()
    failed: list[dict[str, Any]] = []

    def save(partial: bool) -> dict[str, Any]:
        rec = machine(torch.device(args.device))
        rec.update(loadavg_1min_before=load_before, loadavg_1min_after=load_average(), hostname=platform.node())
        ordered = sorted(runs, key=lambda r: (methods.index(r["method"]), r["seed"]))
        this = {"command": command, "git": git, "runs": len(todo), "wall_s": time.perf_counter() - start,
                "uptime_before": uptime_before, "uptime_after": uptime_load(), "machine": rec}
        result = {"benchmark": "accuracy", "command": command, "partial": partial, "git": git, "config": config,
                  "skipped": skipped, "failed": failed, "machine": rec, "uptime_before": uptime_before,
                  "uptime_after": this["uptime_after"], "wall_s": this["wall_s"],
                  "invocations": [*invocations, this], "runs": ordered, "summary": summarise(ordered, methods)}
        write_json(json_path, result)
        render(result, json_path)
        return result

    if todo:
        ctx = mp.get_context("spawn")  # fresh interpreters: no OpenMP state inherited from the parent
        with ctx.Manager() as manager:
            queue = manager.Queue()
            with ctx.Pool(processes=min(args.jobs, len(todo))) as pool:
                pending = [(c, pool.apply_async(_worker, (c, queue))) for c in todo]
                bar = tqdm(total=len(todo) * args.epochs, desc="accuracy study (epochs)", unit="epoch")
                done_runs: set[int] = set()
                while len(done_runs) < len(pending):
                    while not queue.empty():
                        bar.update(queue.get())
                    for i, (c, r) in enumerate(pending):
                        if i in done_runs or not r.ready():
                            continue
                        done_runs.add(i)
                        try:
                            run = r.get()
                        except Exception as e:  # keep the other runs; --reuse reruns the failed ones
                            failed.append({"method": c["method"], "seed": c["seed"], "error": repr(e)})
                            bar.write(f"{c['method']:>16} seed {c['seed']}: FAILED: {e!r}")
                            continue
                        runs.append(run)
                        save(partial=len(runs) < len(runs_cfg))
                        mm = run["metrics"]
                        bar.write(f"{run['method']:>16} seed {run['seed']}: top-1 {mm['top1']:.2f}  "
                                  f"ECE {mm['ece']:.2f}  FGSM {mm['fgsm_top1']:.1f}  PGD {mm['pgd_top1']:.1f}  "
                                  f"({run['wall_s']:.0f} s, load {run['loadavg_1min_end']:.1f})")
                    time.sleep(0.5)
                while not queue.empty():
                    bar.update(queue.get())
                bar.close()
    result = save(partial=len(runs) < len(runs_cfg))
    if failed:
        print(f"{len(failed)} run(s) failed; rerun with --reuse to fill them in", file=sys.stderr)
    if not result["summary"]["per_method"]:
        raise SystemExit(f"no run finished; failures: {failed}")
    print(markdown(result))
    print(f"wrote {json_path}, {json_path.with_suffix('.md')}, {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
