"""Training-step overhead of each mixing method, as a ratio to a step without mixing.

One training step is: mix the batch (none / mixup / cutmix / manifold / alignmixup), forward, loss,
backward, optimizer step. Every method runs the same steps on the same batches; methods are
interleaved round by round (in a rotating order) and every step is timed on its own.

Statistic: the machine may be shared (other processes make some steps 2-10x slower in bursts), so a
method's step time is the *minimum* over its steps, the usual estimate of the uncontended cost, on the
presets that repeat one synthetic batch. The `cnn` preset trains on real batches, whose solves differ,
so its verdict uses the *mean* step (what a training run pays), timed by the thread's CPU time. On a
busy CPU, `--clock thread` runs torch on one thread and times each step by that thread's CPU time,
which other processes barely disturb. The default AlignMixup picks its branch at random per batch, so
its steps are split by the branch they took, each branch gets its statistic, and the method's time is
input_prob * input-branch time + (1 - input_prob) * feature-branch time. Ratios are to the no-mixing
time; min, median and mean ratios are all in the JSON.

Presets:
  cpu   timm resnet18 at a small resolution (128 px, batch 32, fp32) on the CPU, one synthetic batch.
        Target: alignmixup adds at most 10%.
  cnn   a demo-sized CNN (not the demo's model, which is preact_resnet_tiny_cifar: see
        benchmarks/train.py --presets demo times that one): 5 convolutions on 8,192 Fashion-MNIST training
        images, batch 128, fp32, AlignMixup at its last 7x7x128 map, default settings, on the CPU with
        one thread timed by thread CPU time. Target: alignmixup adds at most 10%.
  cuda  ResNet-50 at 224 px, batch 256, bf16 autocast, channels_last, when a GPU is present. Target:
        alignmixup adds at most 3%.

Rows: 'alignmixup' is the method as configured by default (input branch for half of the batches);
'alignmixup_feature' forces the feature branch (input_prob=0), the worst case. A breakdown times
the OT parts of one feature-branch mix on the real last-stage feature shape (plans for all pairs,
the half solve AlignMixup uses, the whole mix), so the solver's share is visible.

GPU-free proxy (issue 11): host syncs (and dispatched torch ops) per training step of each method on
the default CUDA pipeline, counted with a TorchDispatchMode on CPU tensors running the CUDA code
path's logic (benchmarks/common.py: OpCounter, emulated_cuda_step), on the preset's model at a
small batch and resolution (the counts do not depend on either). Target: at most 2 host syncs per
AlignMixup step; every method's budget is SYNC_BUDGETS (the saliency methods' saliency pass included:
Co-Mixup 2 copies to the host for its graph cuts, PuzzleMix 1, SaliencyMix none). Not seen by the proxy: blocking
host-to-device copies (``torch.tensor(..., device=...)``), which wait for the device on CUDA too.

Writes benchmarks/results/overhead-<preset>[-<tag>].json and .png and prints a table. Only measured
numbers are reported, with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from common import (
    MachineRecord,
    OpCounter,
    common_parser,
    emulated_cuda_step,
    pyplot,
    resolve_device,
    result_path,
    save_figure,
    time_min,
    timed,
    write_json,
)
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from tqdm import tqdm

from mixkit import create_mixup, list_mixups
from mixkit.mix import align_mix_features, flip_pair_plans
from mixkit.ot import get_solver, normalize_cost, sinkhorn_torch, squared_euclidean_cost, transport_plan

# Every registered method, no mixing, and AlignMixup forced to its feature branch.
METHODS = ("none", *list_mixups(), "alignmixup_feature")
TARGETS = {"cpu": 0.10, "cnn": 0.10, "cuda": 0.03}  # allowed alignmixup overhead per preset
TARGET_SYNCS_PER_ALIGNMIXUP_STEP = 2
# Host syncs per training step on the default CUDA pipeline that each method may take, as the proxy counts
# them (a method not named here may take none: timm's input methods and Manifold Mixup keep everything on
# the device). None: not bounded.
SYNC_BUDGETS: dict[str, int | None] = {
    **dict.fromkeys(("alignmixup", "alignmixup_ae", "alignmixup_feature"), TARGET_SYNCS_PER_ALIGNMIXUP_STEP),
    "alignmixup_paper": None,  # the paper's reference solver reads its convergence at every iteration
    "comixup": 2,  # the block saliency and the peak distances go to the host for the graph cuts
    "puzzlemix": 1,  # the graph cuts' unary and edge tables go to the host in one copy
    # saliencymix: none with its default gradient saliency (the peak and the box stay on the device);
    # saliency='opencv' copies the source image to the host (1 sync), which the proxy does not run.
}
FMNIST_CNN = "fmnist_cnn5"
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(model="resnet18", img_size=128, batch_size=32, amp=False, channels_last=False, device="cpu",
                data="synthetic", stat="min", num_classes=1000, in_chans=3),
    "cnn": dict(model=FMNIST_CNN, img_size=28, batch_size=128, amp=False, channels_last=False, device="cpu",
                data="fashion_mnist", train_images=8192, stat="mean", num_classes=10, in_chans=1,
                clock="thread"),
    "cuda": dict(model="resnet50", img_size=224, batch_size=256, amp=True, channels_last=True, device="cuda",
                 data="synthetic", stat="min", num_classes=1000, in_chans=3),
}
STATS: dict[str, Callable[[list[float]], float]] = {"min": min, "median": statistics.median, "mean": statistics.fmean}


class FashionCNN(nn.Module):
    """5 convolutions (3x3, BN, ReLU) on 28x28 grey images: 28x28x32, 14x14x64 twice, 7x7x128 twice.

    timm-style ``feature_info`` (stages ``stage1``..``stage3``), so AlignMixup's default layer is the last
    7x7x128 map and manifold mixup's defaults are the input and the first stages, as for timm models.
    """

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, width: int = 32) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        w = width
        self.stage1 = nn.Sequential(*conv(in_chans, w, 1))
        self.stage2 = nn.Sequential(*conv(w, 2 * w, 2), *conv(2 * w, 2 * w, 1))
        self.stage3 = nn.Sequential(*conv(2 * w, 4 * w, 2), *conv(4 * w, 4 * w, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))
        self.feature_info = [dict(module="stage1", num_chs=w, reduction=1),
                             dict(module="stage2", num_chs=2 * w, reduction=2),
                             dict(module="stage3", num_chs=4 * w, reduction=4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(x))))


def create_model(cfg: dict[str, Any]) -> nn.Module:
    if cfg["model"] == FMNIST_CNN:
        return FashionCNN(num_classes=cfg["num_classes"], in_chans=cfg["in_chans"])
    return timm.create_model(cfg["model"], pretrained=False, num_classes=cfg["num_classes"], in_chans=cfg["in_chans"])


def make_batches(cfg: dict[str, Any], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches the steps cycle through: one synthetic batch, or the real Fashion-MNIST subset."""
    g = torch.Generator().manual_seed(0)
    b, size = cfg["batch_size"], cfg["img_size"]
    if cfg["data"] == "synthetic":
        x = torch.randn(b, cfg["in_chans"], size, size, generator=g)
        y = torch.randint(0, cfg["num_classes"], (b,), generator=g)
        pairs = [(x, y)]
    else:
        from mixkit.datasets import FashionMNIST

        train = FashionMNIST(train=True)
        subset = torch.randperm(len(train), generator=g)[: cfg["train_images"]]
        images = (train.images[subset].float() / 255.0 - 0.286) / 0.353  # Fashion-MNIST mean/std
        images = F.interpolate(images.unsqueeze(1), size=size) if size != 28 else images.unsqueeze(1)
        labels = train.labels[subset]
        pairs = [(images[i : i + b], labels[i : i + b]) for i in range(0, len(images) - b + 1, b)]
    memory_format = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    return [(x.to(device).contiguous(memory_format=memory_format), y.to(device)) for x, y in pairs]


def make_step(
    method: str, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: dict[str, Any], num_classes: int,
    solver: Any = None,
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step with the given method (the mixing object is created once, as in a train loop).

    ``solver`` overrides AlignMixup's OT solver (the proxy passes the emulated CUDA pipeline's).
    """
    device = torch.device(cfg["device"])
    amp_dtype = torch.bfloat16 if cfg["amp"] else None
    soft_ce = SoftTargetCrossEntropy()
    mix = None
    if method != "none":
        name, kwargs = (method, {})
        if method == "alignmixup_feature":
            name, kwargs = "alignmixup", {"input_prob": 0.0}
        if name == "alignmixup" and solver is not None:
            kwargs["solver"] = solver
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


def branch_of(mix: Any) -> str:
    """The branch the last call of a mixing object took: 'input' (input mixup), 'none' (a method that left the
    batch unmixed, SaliencyMix at its prob=0.5 say) or 'step' (anything else, no mixing object included)."""
    draw = getattr(mix, "last_draw", None)
    if draw is not None and not draw.mixed:
        return "none"
    return "input" if getattr(draw, "layer", None) == "input" else "step"


def remove_hooks(steps: dict[str, Callable]) -> None:
    for step in steps.values():
        if step.mix is not None and hasattr(step.mix, "remove"):
            step.mix.remove()


def ot_breakdown(model: nn.Module, x: torch.Tensor, cfg: dict[str, Any], repeats: int = 30,
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

    def ms(fn: Callable[[], Any]) -> float:  # minimum over repeats, in ms, like the step times
        return 1e3 * time_min(fn, device, repeats=repeats, clock=clock)

    with torch.no_grad():
        plan_ms = ms(lambda: transport_plan(points, points.flip(0)))
        half_ms = ms(lambda: flip_pair_plans(points))
        mix_ms = ms(lambda: align_mix_features(feats, feats.flip(0), lam, plan=flip_pair_plans(points)))
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


def sync_proxy(cfg: dict[str, Any], methods: list[str], steps: int = 4) -> dict[str, Any]:
    """Host syncs and torch ops per training step of each method on the default CUDA pipeline, counted on CPU.

    The preset's model and optimizer at batch 16 and at most 64 px, fp32, on CPU tensors running mixkit's
    CUDA logic (:func:`common.emulated_cuda_step`); uncounted warm-up steps per method until one took the
    feature branch (the solver's one-time first-shape check), then ``steps`` counted steps, reported per
    branch ('input' / 'step') as the largest count.
    """
    small = {**cfg, "device": "cpu", "amp": False, "channels_last": False, "data": "synthetic",
             "batch_size": 16, "img_size": min(cfg["img_size"], 64)}
    out: dict[str, Any] = {"config": {k: small[k] for k in ("model", "img_size", "batch_size")},
                           "steps_counted": steps, "methods": {}}
    try:
        with emulated_cuda_step(solver="default") as emu:
            out["how"] = emu.note
            torch.manual_seed(0)
            np.random.seed(0)  # noqa: NPY002 (the mixing methods draw from NumPy's global generator, as timm's)
            model = create_model(small).train()
            x, y = make_batches(small, torch.device("cpu"))[0]
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
            for method in methods:
                try:
                    step = make_step(method, model, optimizer, small, small["num_classes"], solver=emu.solver)
                    feature_method = getattr(step.mix, "hooks", None) is not None
                    for _ in range(8):  # warm-up until a feature step ran (the guard's one-time check)
                        step(x, y)
                        if branch_of(step.mix) == "step" or (not feature_method and branch_of(step.mix) != "none"):
                            break
                    per_branch: dict[str, list[OpCounter]] = {}
                    # `steps` counted steps, and more (at most 8) until one mixed: a method that mixes only
                    # some batches (SaliencyMix's prob=0.5) must have its mixing step, saliency pass and all, counted.
                    for i in range(steps + 8):
                        if i >= steps and (step.mix is None or set(per_branch) - {"none"}):
                            break
                        with OpCounter() as counter:
                            step(x, y)
                        per_branch.setdefault(branch_of(step.mix), []).append(counter)
                    budget = SYNC_BUDGETS.get(method, 0)
                    out["methods"][method] = {
                        branch: {"syncs": max(c.num_syncs for c in cs), "ops": max(c.num_ops for c in cs),
                                 "sync_sites": dict(max(cs, key=lambda c: c.num_syncs).sync_sites),
                                 "sync_budget": budget,
                                 "within_budget": budget is None or max(c.num_syncs for c in cs) <= budget}
                        for branch, cs in per_branch.items()
                    }
                    remove_hooks({method: step})
                except Exception as e:  # noqa: BLE001 (one method's failure must not lose the others)
                    out["methods"][method] = {"error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {e}"
    align = [b["syncs"] for m in ("alignmixup", "alignmixup_feature")
             for b in out["methods"].get(m, {}).values() if isinstance(b, dict) and "syncs" in b]
    out["target_syncs_per_alignmixup_step"] = TARGET_SYNCS_PER_ALIGNMIXUP_STEP
    out["max_syncs_per_alignmixup_step"] = max(align) if align else None
    out["meets_sync_target"] = max(align) <= TARGET_SYNCS_PER_ALIGNMIXUP_STEP if align else None
    return out


def method_times(samples: dict[str, list[float]], input_prob: float | None, stat: str) -> tuple[float, str | None]:
    """A method's step time under ``stat``, weighting AlignMixup's branches by input_prob."""
    fn = STATS[stat]
    if input_prob is not None and 0 < input_prob < 1:
        if set(samples) == {"input", "step"}:
            return input_prob * fn(samples["input"]) + (1 - input_prob) * fn(samples["step"]), None
        seen = next(iter(samples))
        return fn(samples[seen]), f"only the {seen!r} branch was drawn; raise --rounds to weight both"
    return fn([t for ts in samples.values() for t in ts]), None


def run_preset(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(PRESETS[preset])
    for key in ("model", "img_size", "batch_size"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.device is not None:
        cfg["device"] = args.device
    device = resolve_device(cfg["device"])
    num_classes = cfg["num_classes"]
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (the mixing methods draw from NumPy's global generator, as timm's)
    model = create_model(cfg).to(device).train()
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    batches = make_batches(cfg, device)
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
    counters = dict.fromkeys(steps, 0)  # each method walks through the batches in the same order
    with MachineRecord(device, timm=timm.__version__) as rec, \
            tqdm(total=total, desc=f"{preset}: {cfg['model']} {cfg['img_size']}px b{cfg['batch_size']}") as bar:
        for method, step in steps.items():
            for _ in range(args.warmup):
                step(*batches[counters[method] % len(batches)])
                counters[method] += 1
                bar.update()
        for r in range(args.rounds):
            for method in order[r % len(order):] + order[: r % len(order)]:
                for _ in range(args.steps):
                    batch = batches[counters[method] % len(batches)]
                    counters[method] += 1
                    _, seconds = timed(lambda m=method, b=batch: steps[m](*b), device, clock)
                    samples[method].setdefault(branch_of(steps[method].mix), []).append(seconds)
                    bar.update()
    # Sanity check that the feature methods really mixed in the timed steps (hook consumptions).
    fired = {m: getattr(getattr(st.mix, "hooks", None), "num_fired", None) for m, st in steps.items()}
    remove_hooks(steps)

    def input_prob(m: str) -> float | None:
        return getattr(steps[m].mix, "input_prob", None)

    base = {s: method_times(samples["none"], None, s)[0] for s in STATS}
    rows, notes = {}, {}
    for m in steps:
        times = {}
        for s in STATS:
            times[s], note = method_times(samples[m], input_prob(m), s)
            if note:
                notes[m] = note
        rows[m] = {
            "step_ms": times["min"] * 1e3,
            "ratio": times["min"] / base["min"],
            "median_step_ms": times["median"] * 1e3,
            "median_ratio": times["median"] / base["median"],
            "mean_step_ms": times["mean"] * 1e3,
            "mean_ratio": times["mean"] / base["mean"],
            "steps_per_branch": {b: len(ts) for b, ts in samples[m].items()},
            "branch_min_ms": {b: min(ts) * 1e3 for b, ts in samples[m].items()},
            "branch_mean_ms": {b: statistics.fmean(ts) * 1e3 for b, ts in samples[m].items()},
            "feature_mixes_applied": fired[m],
        }
    stat = cfg["stat"]
    ratio_key = {"min": "ratio", "median": "median_ratio", "mean": "mean_ratio"}[stat]
    align_ratio = rows.get("alignmixup", {}).get(ratio_key)
    report = {
        "preset": preset,
        "config": {
            **cfg, "rounds": args.rounds, "steps_per_round": args.steps, "warmup": args.warmup,
            "batches": len(batches), "clock": "thread_time" if clock is time.thread_time else "perf_counter",
        },
        "machine": rec.record,
        "target_alignmixup_overhead": TARGETS[preset],
        "verdict": {
            "statistic": stat, "alignmixup_ratio": align_ratio,
            "meets_target": None if align_ratio is None else align_ratio - 1 <= TARGETS[preset],
        },
        "results": rows,
        "notes": notes,
    }
    try:
        report["ot_breakdown"] = ot_breakdown(model, batches[0][0], cfg, repeats=args.breakdown_repeats, clock=clock)
    except Exception as e:  # noqa: BLE001 (the step timings above must not be lost)
        report["ot_breakdown"] = {"error": f"{type(e).__name__}: {e}"}
    if args.count_syncs:
        report["cuda_sync_proxy"] = sync_proxy(cfg, list(steps))
    return report


def print_table(report: dict[str, Any]) -> None:
    cfg, mach = report["config"], report["machine"]
    where = mach.get("gpu", f"{mach['cpu']} ({mach['torch_threads']} threads)")
    print(f"\n{report['preset']}: {cfg['model']} {cfg['img_size']}px batch {cfg['batch_size']}"
          f"{' bf16' if cfg['amp'] else ' fp32'}{' channels_last' if cfg['channels_last'] else ''} on {where}")
    print(f"1-min load average before/after: {mach.get('loadavg_1min_before')}/{mach.get('loadavg_1min_after')}")
    print(f"| {'method':<20} | {'step ms (min)':>13} | {'ratio':>6} | {'median ratio':>12} | {'mean ratio':>10} |")
    print(f"|{'-' * 22}|{'-' * 14}:|{'-' * 7}:|{'-' * 13}:|{'-' * 11}:|")
    for method, row in report["results"].items():
        print(f"| {method:<20} | {row['step_ms']:>13.1f} | {row['ratio']:>6.3f} | {row['median_ratio']:>12.3f} "
              f"| {row['mean_ratio']:>10.3f} |")
    ot = report.get("ot_breakdown", {})
    if "error" not in ot:
        print(f"OT on {ot['feature_shape']} {ot['feature_dtype']} (forward, no grad): all-pairs transport_plan "
              f"{ot['transport_plan_all_pairs_ms']:.1f} ms, flip_pair_plans {ot['flip_pair_plans_ms']:.1f} ms, "
              f"align_mix_features incl. plans {ot['align_mix_features_ms']:.1f} ms; "
              f"torch solver {ot['torch_solver_iterations']} iterations")
    verdict = report["verdict"]
    if verdict["alignmixup_ratio"] is not None:
        target = report["target_alignmixup_overhead"]
        print(f"alignmixup overhead ({verdict['statistic']} step) {100 * (verdict['alignmixup_ratio'] - 1):+.1f}% "
              f"{'meets' if verdict['meets_target'] else 'MISSES'} the {100 * target:.0f}% target")
    proxy = report.get("cuda_sync_proxy")
    if proxy:
        per = {m: {b: c.get("syncs") for b, c in v.items()} if "error" not in v else v["error"]
               for m, v in proxy["methods"].items()}
        print(f"host syncs per step on the default CUDA pipeline (proxy, counted on CPU): {per}; "
              f"target <= {proxy['target_syncs_per_alignmixup_step']} per AlignMixup step: "
              f"{'met' if proxy['meets_sync_target'] else 'NOT met'}" + (f" ({proxy['error']})" if "error" in proxy else ""))


def _load(mach: dict[str, Any], when: str) -> str:
    value = mach.get(f"loadavg_1min_{when}")
    return "?" if value is None else f"{value:.1f}"


def plot(report: dict[str, Any], path) -> None:
    plt = pyplot()
    key = {"min": "ratio", "median": "median_ratio", "mean": "mean_ratio"}[report["verdict"]["statistic"]]
    methods = list(report["results"])
    ratios = [report["results"][m][key] for m in methods]
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
                 f"\n({clock}, {report['verdict']['statistic']} over steps; 1-min load {_load(mach, 'before')} before, "
                 f"{_load(mach, 'after')} after)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common_parser()]
    )
    parser.set_defaults(device=None)  # the preset's device unless --device says otherwise
    parser.add_argument(
        "--preset", choices=["auto", "cpu", "cnn", "cuda", "both"], default="auto",
        help="auto: cpu, plus cuda when a GPU is available (default); both: cpu and cuda (fails without a GPU)",
    )
    parser.add_argument("--model", help="override the preset's model name (timm, or fmnist_cnn5)")
    parser.add_argument("--img-size", type=int, help="override the preset's input resolution")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds per method (default 12)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per method per round (default 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first (default 2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to time")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--clock", choices=["wall", "thread"], default=None,
        help="wall: perf_counter (GPU presets always use it). thread: CPU time of the main thread with torch "
        "on one thread, which other processes on a shared machine barely disturb. Default: the preset's "
        "(thread for cnn, wall otherwise)",
    )
    parser.add_argument("--breakdown-repeats", type=int, default=30,
                        help="timed repeats of each part of the OT breakdown (minimum reported; default 30)")
    parser.add_argument("--no-count-syncs", dest="count_syncs", action="store_false",
                        help="skip the GPU-free proxy (host syncs per step on the default CUDA pipeline)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    has_cuda = torch.cuda.is_available()
    presets = {"auto": ["cpu", "cuda"] if has_cuda else ["cpu"], "both": ["cpu", "cuda"]}.get(args.preset, [args.preset])
    if "cuda" in presets and not has_cuda and args.device is None:
        raise SystemExit("the cuda preset needs a CUDA device; none is available (use --preset cpu, or "
                         "--device cpu to run its configuration on the CPU)")
    reports = []
    clock_arg = args.clock
    for preset in presets:
        args.clock = clock_arg or PRESETS[preset].get("clock", "wall")
        threads = args.threads
        if args.clock == "thread":
            if threads not in (None, 1):
                raise SystemExit("--clock thread measures one thread: drop --threads or set it to 1")
            threads = 1
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            report = run_preset(preset, args)
        finally:
            torch.set_num_threads(previous)
        print_table(report)
        json_path = result_path(args.out_dir, f"overhead-{preset}", tag=args.tag)
        write_json(json_path, report)
        if not args.no_plot:
            try:
                plot(report, json_path.with_suffix(".png"))
            except ImportError as e:  # matplotlib missing (a bare GPU machine): the JSON holds everything
                print(f"no plot: {e}")
        print(f"wrote {json_path}" + ("" if args.no_plot else f" and {json_path.with_suffix('.png')}"))
        reports.append(report)
    return reports


if __name__ == "__main__":
    main()
