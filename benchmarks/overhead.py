"""Training-step overhead of each mixing method, as a ratio to a step without mixing.

One training step is: mix the batch (none / mixup / cutmix / manifold / alignmixup), forward, loss,
backward, optimizer step. Every method runs the same steps on the same synthetic batch; methods are
interleaved round by round (in a rotating order) and every step is timed on its own.

Statistic: the machine may be shared (other processes make some steps 2-10x slower in bursts), so a
method's step time is the *minimum* over its steps, the usual estimate of the uncontended cost. On a
busy CPU, `--clock thread` goes further: torch runs on one thread and each step is timed by that
thread's CPU time, which other processes barely disturb. The
default AlignMixup picks its branch at random per batch, so its steps are split by the branch they
took, each branch gets its minimum, and the method's time is input_prob * input-branch time +
(1 - input_prob) * feature-branch time. Ratios are to the no-mixing time. Medians (which contention
inflates) are kept in the JSON too.

Presets:
  cpu   timm resnet18 at a small resolution (128 px, batch 32, fp32) on the CPU. Target: alignmixup
        adds at most 10%.
  cuda  ResNet-50 at 224 px, batch 256, bf16 autocast, channels_last, when a GPU is present. Target:
        alignmixup adds at most 3%.

Rows: 'alignmixup' is the method as configured by default (input branch for half of the batches);
'alignmixup_feature' forces the feature branch (input_prob=0), the worst case. A breakdown times
the OT parts of one feature-branch mix on the real last-stage feature shape (plans for all pairs,
the half solve AlignMixup uses, the whole mix), so the solver's share is visible.

Writes benchmarks/results/overhead-<preset>.json and .png and prints a table. Only measured numbers
are reported, with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from common import load_average, machine
from timm.loss import SoftTargetCrossEntropy
from tqdm import tqdm

from mixkit import create_mixup
from mixkit.mix import align_mix_features, flip_pair_plans
from mixkit.ot import get_solver, normalize_cost, sinkhorn_torch, squared_euclidean_cost, transport_plan

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("none", "mixup", "cutmix", "manifold", "alignmixup", "alignmixup_feature")
TARGETS = {"cpu": 0.10, "cuda": 0.03}  # allowed alignmixup overhead per preset
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(model="resnet18", img_size=128, batch_size=32, amp=False, channels_last=False, device="cpu"),
    "cuda": dict(model="resnet50", img_size=224, batch_size=256, amp=True, channels_last=True, device="cuda"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset", choices=["auto", "cpu", "cuda", "both"], default="auto",
        help="auto: cpu, plus cuda when a GPU is available (default); both fails without a GPU",
    )
    parser.add_argument("--model", help="override the preset's timm model name")
    parser.add_argument("--img-size", type=int, help="override the preset's input resolution")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds per method (default 12)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per method per round (default 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first (default 2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to time")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--clock", choices=["wall", "thread"], default="wall",
        help="wall: perf_counter (default; GPU presets always use it). thread: CPU time of the main thread "
        "with torch on one thread, which other processes on a shared machine barely disturb (cpu preset)",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the JSON and PNG go")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--tag", default="", help="suffix of the result files: overhead-<preset>[-<tag>].json")
    return parser.parse_args()


def make_step(
    method: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: dict[str, Any], num_classes: int
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step with the given method (the mixing object is created once, as in a train loop)."""
    device = torch.device(cfg["device"])
    amp_dtype = torch.bfloat16 if cfg["amp"] else None
    soft_ce = SoftTargetCrossEntropy()
    mix = None
    if method != "none":
        name, kwargs = (method, {})
        if method == "alignmixup_feature":
            name, kwargs = "alignmixup", {"input_prob": 0.0}
        mix = create_mixup(name, model=model, num_classes=num_classes, label_smoothing=0.1, **kwargs)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.clone()  # timm's Mixup edits in place; every method pays the same copy
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if mix is None:
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            else:
                x, target = mix(x, y)
                loss = soft_ce(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step.mix = mix  # type: ignore[attr-defined]
    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step: Callable[[torch.Tensor, torch.Tensor], None], x: torch.Tensor, y: torch.Tensor,
              device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    _sync(device)
    start = clock()
    step(x, y)
    _sync(device)
    return clock() - start


def ot_breakdown(model: torch.nn.Module, x: torch.Tensor, cfg: dict[str, Any], repeats: int = 30,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Times the OT parts of one feature-branch AlignMixup on the real last-stage feature shape."""
    device = torch.device(cfg["device"])
    amp_dtype = torch.bfloat16 if cfg["amp"] else None
    stage = model.get_submodule(model.feature_info[-1]["module"])
    seen: list[torch.Tensor] = []
    handle = stage.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        model(x)
    handle.remove()
    feats = seen[0]
    points = feats.flatten(2).transpose(1, 2)
    lam = 0.4

    def timed(fn: Callable[[], Any]) -> float:  # minimum over repeats, in ms, like the step times
        fn()
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            start = clock()
            fn()
            _sync(device)
            best = min(best, clock() - start)
        return best * 1e3

    with torch.no_grad():
        plan_ms = timed(lambda: transport_plan(points, points.flip(0)))
        half_ms = timed(lambda: flip_pair_plans(points))
        mix_ms = timed(lambda: align_mix_features(feats, feats.flip(0), lam, plan=flip_pair_plans(points)))
        solver = get_solver("torch")
        cost = normalize_cost(squared_euclidean_cost(points.float(), points.flip(0).float()), solver.cost_scale)
        _, info = sinkhorn_torch(cost, solver.eps, solver.max_iter, solver.tol, return_info=True)
    return {
        "feature_shape": list(feats.shape),
        "feature_dtype": str(feats.dtype).replace("torch.", ""),
        "transport_plan_all_pairs_ms": plan_ms,
        "flip_pair_plans_ms": half_ms,
        "align_mix_features_ms": mix_ms,
        "torch_solver_iterations": info.n_iter,
        "torch_solver_defaults": {"eps": solver.eps, "max_iter": solver.max_iter, "tol": solver.tol},
    }


def run_preset(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(PRESETS[preset])
    for key in ("model", "img_size", "batch_size"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    device = torch.device(cfg["device"])
    num_classes = 1000
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (the mixing methods draw from NumPy's global generator, as timm's)
    model = timm.create_model(cfg["model"], pretrained=False, num_classes=num_classes).to(device).train()
    x = torch.randn(cfg["batch_size"], 3, cfg["img_size"], cfg["img_size"], device=device)
    y = torch.randint(0, num_classes, (cfg["batch_size"],), device=device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    steps = {m: make_step(m, model, optimizer, cfg, num_classes) for m in args.methods}
    if "none" not in steps:
        raise SystemExit("the 'none' method is the baseline of the ratios; keep it in --methods")

    # CPU time of this thread only counts while it runs, so other processes hardly change it; with one
    # torch thread (set in main) the whole step, backward included, runs on this thread.
    clock = time.thread_time if args.clock == "thread" and device.type == "cpu" else time.perf_counter
    total = len(steps) * (args.warmup + args.rounds * args.steps)
    samples: dict[str, dict[str, list[float]]] = {m: {} for m in steps}  # method -> branch -> step times
    order = list(steps)
    load_before = load_average()
    with tqdm(total=total, desc=f"{preset}: {cfg['model']} {cfg['img_size']}px b{cfg['batch_size']}") as bar:
        for step in steps.values():
            for _ in range(args.warmup):
                step(x, y)
                bar.update()
        for r in range(args.rounds):
            for method in order[r % len(order):] + order[: r % len(order)]:
                for _ in range(args.steps):
                    seconds = time_step(steps[method], x, y, device, clock)
                    mix = steps[method].mix
                    branch = "input" if getattr(mix, "last_layer", None) == "input" else "step"
                    samples[method].setdefault(branch, []).append(seconds)
                    bar.update()
    # Sanity check that the feature methods really mixed in the timed steps (hook consumptions).
    fired = {m: getattr(getattr(st.mix, "hooks", None), "num_fired", None) for m, st in steps.items()}
    for step in steps.values():
        if step.mix is not None and hasattr(step.mix, "remove"):
            step.mix.remove()

    def method_time(method: str, stat: Callable[[list[float]], float]) -> float:
        branches = samples[method]
        input_prob = getattr(steps[method].mix, "input_prob", None)
        if input_prob is not None and 0 < input_prob < 1:
            if set(branches) != {"input", "step"}:
                raise SystemExit(f"{method}: too few rounds to see both branches; raise --rounds")
            return input_prob * stat(branches["input"]) + (1 - input_prob) * stat(branches["step"])
        return stat([t for ts in branches.values() for t in ts])

    base_min, base_median = method_time("none", min), method_time("none", statistics.median)
    rows = {}
    for m in steps:
        t_min, t_median = method_time(m, min), method_time(m, statistics.median)
        rows[m] = {
            "step_ms": t_min * 1e3,
            "ratio": t_min / base_min,
            "median_step_ms": t_median * 1e3,
            "median_ratio": t_median / base_median,
            "steps_per_branch": {b: len(ts) for b, ts in samples[m].items()},
            "branch_min_ms": {b: min(ts) * 1e3 for b, ts in samples[m].items()},
            "feature_mixes_applied": fired[m],
        }
    return {
        "preset": preset,
        "config": {
            **cfg, "rounds": args.rounds, "steps_per_round": args.steps, "warmup": args.warmup,
            "clock": "thread_time" if clock is time.thread_time else "perf_counter",
        },
        "machine": {**machine(device, timm=timm.__version__), "loadavg_1min_before": load_before, "loadavg_1min_after": load_average()},
        "target_alignmixup_overhead": TARGETS[preset],
        "results": rows,
        "ot_breakdown": ot_breakdown(model, x, cfg, clock=clock),
    }


def print_table(report: dict[str, Any]) -> None:
    cfg, mach = report["config"], report["machine"]
    where = mach.get("gpu", f"{mach['cpu']} ({mach['torch_threads']} threads)")
    print(f"\n{report['preset']}: {cfg['model']} {cfg['img_size']}px batch {cfg['batch_size']}"
          f"{' bf16' if cfg['amp'] else ' fp32'}{' channels_last' if cfg['channels_last'] else ''} on {where}")
    print(f"1-min load average before/after: {mach.get('loadavg_1min_before')}/{mach.get('loadavg_1min_after')}")
    print(f"| {'method':<20} | {'step ms (min)':>13} | {'ratio':>6} | {'median ratio':>12} |")
    print(f"|{'-' * 22}|{'-' * 14}:|{'-' * 7}:|{'-' * 13}:|")
    for method, row in report["results"].items():
        print(f"| {method:<20} | {row['step_ms']:>13.1f} | {row['ratio']:>6.3f} | {row['median_ratio']:>12.3f} |")
    ot = report["ot_breakdown"]
    print(f"OT on {ot['feature_shape']} {ot['feature_dtype']} (forward, no grad): all-pairs transport_plan "
          f"{ot['transport_plan_all_pairs_ms']:.1f} ms, flip_pair_plans {ot['flip_pair_plans_ms']:.1f} ms, "
          f"align_mix_features incl. plans {ot['align_mix_features_ms']:.1f} ms; "
          f"torch solver {ot['torch_solver_iterations']} iterations")
    ratio = report["results"].get("alignmixup", {}).get("ratio")
    if ratio is not None:
        target = report["target_alignmixup_overhead"]
        verdict = "meets" if ratio - 1 <= target else "MISSES"
        print(f"alignmixup overhead {100 * (ratio - 1):+.1f}% {verdict} the {100 * target:.0f}% target")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(report["results"])
    ratios = [report["results"][m]["ratio"] for m in methods]
    cfg, mach = report["config"], report["machine"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(methods, ratios, color=["#999999"] + ["#4c72b0"] * (len(methods) - 1))
    ax.axhline(1 + report["target_alignmixup_overhead"], color="#c44e52", linestyle="--",
               label=f"alignmixup target (+{100 * report['target_alignmixup_overhead']:.0f}%)")
    for i, r in enumerate(ratios):
        ax.text(i, r, f"{r:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0.9, max(ratios + [1 + report["target_alignmixup_overhead"]]) * 1.05)
    ax.set_ylabel("step time / no mixing")
    where = mach.get("gpu", mach["cpu"])
    clock = "thread CPU time, 1 thread" if cfg.get("clock") == "thread_time" else "wall clock"
    ax.set_title(f"{cfg['model']} {cfg['img_size']}px b{cfg['batch_size']}{' bf16' if cfg['amp'] else ''} — {where}"
                 f" ({clock}, min over steps)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.clock == "thread":
        if args.threads not in (None, 1):
            raise SystemExit("--clock thread measures one thread: drop --threads or set it to 1")
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    has_cuda = torch.cuda.is_available()
    presets = {"auto": ["cpu", "cuda"] if has_cuda else ["cpu"], "both": ["cpu", "cuda"]}.get(args.preset, [args.preset])
    if "cuda" in presets and not has_cuda:
        raise SystemExit("the cuda preset needs a CUDA device; none is available (use --preset cpu)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for preset in presets:
        report = run_preset(preset, args)
        print_table(report)
        json_path = args.out_dir / f"overhead-{preset}{'-' + args.tag if args.tag else ''}.json"
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        if not args.no_plot:
            plot(report, json_path.with_suffix(".png"))
        print(f"wrote {json_path}" + ("" if args.no_plot else f" and {json_path.with_suffix('.png')}"))


if __name__ == "__main__":
    main()
