"""End-to-end training throughput of mixkit-train's step per mixing method and loader.

For each preset and loader, the same loop as ``mixkit.train``'s engine (batch from the loader, ``mixup_fn``,
forward, loss, backward, optimizer step) runs with no mixing and every registered method (``--methods``
picks some): timm's mixup and CutMix, Manifold Mixup, AlignMixup (AlignMixup/AE with its decoder training
beside the model), and the saliency methods (SaliencyMix, Co-Mixup, ...), whose saliency pass (a second
forward/backward on the clean batch) runs inside ``mixup_fn`` and is counted in the step. Every method is
built from mixkit-train's flags (``--mixup <name>``), so it mixes as mixkit-train's defaults say
(``--mixup-prob 1``: SaliencyMix's saliency pass runs at every step, not at half of them as with the
authors' prob 0.5). Each step's time is split into waiting for the next batch and computing; on the CPU the
time of the ``mixup_fn`` call itself (mixing, saliency pass included) is recorded too. Presets:

- ``resnet18``: timm resnet18, 128 px, batch 32, on a generated ImageFolder of JPEGs (torch loader) and its
  .beton (ffcv loader, when ffcv is installed).
- ``demo``: the ``make demo`` model (preact_resnet_tiny_cifar, widths 8-64) on Fashion-MNIST held in
  memory, batch 128 (needs Debian's dataset-fashion-mnist).

Writes ``benchmarks/results/train-<device>.json`` and ``.png``. The methods run interleaved, round by round,
in a rotating order, so that a change in the machine's load hits every method alike. Target (issue 9):
AlignMixup's time per image at most 10% over no mixing on the CPU (3% on a GPU), per preset and loader;
AlignMixup/AE's at most 25% over AlignMixup (issue 16); the JSON's ``verdict``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    MachineRecord,
    common_parser,
    describe_machine,
    resolve_device,
    result_path,
    save_figure,
    write_json,
)
from PIL import Image

import mixkit  # noqa: F401  (registers mixkit's timm models)
from mixkit.data import create_loader, write_beton
from mixkit.mix import MixupBase, list_mixups
from mixkit.train import build_mixup, parse_args
from mixkit.train.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD

TARGET_SLOWDOWN = {"cpu": 0.10, "cuda": 0.03}  # allowed extra time per image of AlignMixup over no mixing
TARGET_AE_OVER_ALIGNMIXUP = 0.25  # AlignMixup/AE's allowed extra time per image over AlignMixup (issue 16)
# Every registered method through mixkit-train's flags, and no mixing.
METHODS = {"none": [], **{name: ["--mixup", name] for name in list_mixups()}}
WARMUP_STEPS = 16  # at most, per method: until it mixed once (feature methods: took their feature branch)


def make_folder(root: Path, *, num_images: int, classes: int = 10, size: int = 160, seed: int = 0) -> Path:
    """A JPEG ImageFolder of smooth random images (decoded like photos: JPEG, varying content)."""
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        d = root / f"class_{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        low = rng.uniform(0, 255, size=(size // 16, size // 16, 3)).astype(np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        img.save(d / f"{i:05d}.jpg", quality=90)
    return root


def build_loader(preset: str, loader: str, work: Path, batch_size: int, workers: int, device: torch.device,
                 num_images: int = 320):
    if preset == "demo":
        from mixkit.datasets import FashionMNIST

        ds = FashionMNIST(train=True)
        return create_loader("memory", (ds.images, ds.labels), batch_size=batch_size, is_training=True,
                             img_size=28, device=device, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, rank=0,
                             world_size=1, seed=0)

    folder = work / "images"
    if not folder.is_dir():
        make_folder(folder, num_images=num_images)
    source = folder
    if loader == "ffcv":
        source = work / "images.beton"
        if not source.is_file():
            write_beton(folder, source, num_workers=2)
    return create_loader(loader, source, batch_size=batch_size, is_training=True, img_size=128,
                         num_workers=workers, device=device)


def forever(loader):
    """Batches without end: epoch after epoch."""
    while True:
        yield from loader


def run_method(model, mixup_fn, it, steps: int, lr: float = 0.01) -> dict[str, float]:
    """``steps`` training steps: their data wait, compute (wall and process CPU) and mixing times, and how
    many of them mixed (``mixed``; read from ``last_draw`` after the timed part, on the CPU only: on CUDA
    SaliencyMix's ``last_draw`` copies its boxes to the host, a sync the engine's step does not have)."""
    from timm.loss import SoftTargetCrossEntropy

    # As the engine: the method's trainable parts (AlignMixup/AE's decoder) train too, its extra loss is added.
    parts = mixup_fn.extra_modules() if isinstance(mixup_fn, MixupBase) else {}
    params = [*model.parameters(), *(p for part in parts.values() for p in part.parameters())]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    loss_fn = SoftTargetCrossEntropy() if mixup_fn is not None else torch.nn.CrossEntropyLoss()
    wait = compute = compute_cpu = mix = 0.0
    images = mixed = 0
    on_cpu = next(model.parameters()).device.type == "cpu"
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(it)
        t1, c1 = time.perf_counter(), time.process_time()
        if mixup_fn is not None:
            x, y = mixup_fn(x, y)
        mix += time.perf_counter() - t1
        loss = loss_fn(model(x), y)
        extra = mixup_fn.extra_loss() if isinstance(mixup_fn, MixupBase) else None
        if extra is not None:
            loss = loss + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2, c2 = time.perf_counter(), time.process_time()
        wait += t1 - t0
        compute += t2 - t1
        compute_cpu += c2 - c1
        images += len(x)
        if on_cpu:
            mixed += bool(mixup_fn is not None and getattr(getattr(mixup_fn, "last_draw", None), "mixed", True))
    return {"wait_s": wait, "compute_s": compute, "compute_cpu_s": compute_cpu, "mix_s": mix, "images": images,
            "steps": steps, "mixed_steps": mixed if on_cpu else None}


def warm_up(model, mixup_fn, it) -> None:
    """Untimed steps (allocations, ffcv's JIT, the OT solver's numba compilation, the saliency pass's first
    backward) until the method has mixed once, and a feature method has taken its feature branch."""
    feature_method = getattr(mixup_fn, "hooks", None) is not None
    for _ in range(WARMUP_STEPS):
        run_method(model, mixup_fn, it, 1)
        draw = getattr(mixup_fn, "last_draw", None)
        if draw is None or (draw.mixed and (draw.branch == "feature" or not feature_method)):
            break


def verdict(rows: list[dict], device: torch.device) -> dict[str, dict]:
    """Per preset and loader: AlignMixup's extra time per image over no mixing, and AlignMixup/AE's over
    AlignMixup, against their targets."""
    target = TARGET_SLOWDOWN.get(device.type, TARGET_SLOWDOWN["cpu"])
    out: dict[str, dict] = {}
    by_group: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_group.setdefault(f"{r['preset']}/{r['loader']}", {})[r["method"]] = r
    for group, methods in by_group.items():
        if "alignmixup" not in methods or "none" not in methods:
            continue
        slowdown = 1.0 / methods["alignmixup"]["ratio_to_none"] - 1.0
        out[group] = {"alignmixup_slowdown": slowdown, "target": target, "meets_target": slowdown <= target}
        if "alignmixup_ae" in methods:
            ae = methods["alignmixup"]["images_per_s"] / methods["alignmixup_ae"]["images_per_s"] - 1.0
            out[group].update(ae_over_alignmixup=ae, ae_target=TARGET_AE_OVER_ALIGNMIXUP,
                              ae_meets_target=ae <= TARGET_AE_OVER_ALIGNMIXUP)
    return out


def write_results(args, rec, rows: list[dict], device: torch.device) -> Path:
    """JSON and PNG of the rows so far (rewritten after every preset/loader group)."""
    out = result_path(args.out_dir, "train", device=device, tag=args.tag)
    write_json(out, {"machine": rec.record, "rounds": args.rounds, "steps": args.steps, "rows": rows,
                     "verdict": verdict(rows, device)})
    plt = __import__("common").pyplot()
    groups = sorted({(r["preset"], r["loader"]) for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.8), squeeze=False)
    for ax, (preset, loader_name) in zip(axes[0], groups, strict=True):
        sel = [r for r in rows if r["preset"] == preset and r["loader"] == loader_name]
        names = [r["method"] for r in sel]
        comp = [r["images_per_s"] * (1 - r["data_wait_share"]) for r in sel]
        ax.bar(names, [r["images_per_s"] for r in sel], color="#9ecae1", label="images/s")
        ax.bar(names, comp, color="#3182bd", width=0.4, label="share computing (scaled)")
        ax.set_title(f"{preset}, {loader_name}", fontsize=9)
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylabel("training images/s")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(describe_machine(rec.record), fontsize=7)
    fig.tight_layout()
    save_figure(fig, out.with_suffix(".png"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, parents=[common_parser(device="cpu")],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["resnet18", "demo"], help="resnet18 and/or demo")
    parser.add_argument("--loaders", nargs="+", default=["torch", "ffcv"], help="loaders of the resnet18 preset")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds per method, each starting with the next method (default 5)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per method and round (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 gives steadier CPU times on a shared machine")
    parser.add_argument("--num-images", type=int, default=320, help="images of the generated folder (default 320)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="METHOD",
                        help="methods to time, 'none' (no mixing: the baseline of the ratios) included; default: "
                             f"all of {', '.join(METHODS)}")
    args = parser.parse_args()
    if "none" not in args.methods:
        parser.error("--methods: keep 'none', the baseline of every ratio")
    methods = {m: METHODS[m] for m in ["none", *(m for m in args.methods if m != "none")]}
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm

    rows = []
    with MachineRecord(device, timm=timm.__version__) as rec, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for preset in args.presets:
            loaders = ["memory"] if preset == "demo" else args.loaders
            for loader_name in loaders:
                if loader_name == "ffcv":
                    try:
                        import ffcv  # noqa: F401
                    except ImportError:
                        print("ffcv is not installed: skipping the ffcv rows", file=sys.stderr)
                        continue
                bs = 128 if preset == "demo" else 32
                loader = build_loader(preset, loader_name, work, bs, args.workers, device, args.num_images)
                torch.manual_seed(0)
                if preset == "demo":
                    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=10, in_chans=1, base_width=8)
                else:
                    model = timm.create_model("resnet18", num_classes=10)
                model.to(device).train()
                fns = {m: build_mixup(parse_args(a), model, num_classes=10) for m, a in methods.items()}
                totals = {m: {"wait_s": 0.0, "compute_s": 0.0, "compute_cpu_s": 0.0, "mix_s": 0.0, "images": 0,
                              "steps": 0, "mixed_steps": 0} for m in methods}
                it = forever(loader)
                for fn in fns.values():
                    warm_up(model, fn, it)
                order = list(fns)
                for rnd in range(args.rounds):
                    # A rotating order, so that no method is always the first of a round (the one that meets
                    # the caches, the allocator and the loader's queue as the previous method left them).
                    for m in order[rnd % len(order):] + order[: rnd % len(order)]:
                        fn = fns[m]
                        # Every method draws the same lam, branches and layers in a round (AlignMixup and
                        # AlignMixup/AE share their draws): the comparison is not hostage to which steps of
                        # which method took the cheaper input-mixup branch.
                        np.random.seed(rnd)  # noqa: NPY002 - the methods draw from NumPy's global generator
                        r = run_method(model, fn, it, args.steps)
                        for k in r:
                            totals[m][k] = None if r[k] is None else totals[m][k] + r[k]
                for fn in fns.values():
                    if fn is not None and hasattr(fn, "remove"):
                        fn.remove()
                base = None
                for m, t in totals.items():
                    total = t["wait_s"] + t["compute_s"]
                    ips = t["images"] / total
                    base = base or ips
                    steps = args.rounds * args.steps
                    on_cpu = t["mixed_steps"] is not None
                    row = {"preset": preset, "loader": loader_name, "method": m, "images_per_s": ips,
                           "data_wait_share": t["wait_s"] / total, "compute_ms_per_step": 1000 * t["compute_s"] / steps,
                           "compute_cpu_ms_per_step": 1000 * t["compute_cpu_s"] / steps,
                           "ratio_to_none": ips / base, "batch_size": bs,
                           "saliency_pass": bool(getattr(fns[m], "uses_model_gradient", False)),
                           # the mixup_fn call (saliency pass included); on CUDA it only queues work: not kept
                           "mix_ms_per_step": 1000 * t["mix_s"] / steps if on_cpu else None,
                           "mixed_share": t["mixed_steps"] / t["steps"] if on_cpu else None}
                    rows.append(row)
                    mix_part = f"  mixing {row['mix_ms_per_step']:6.1f} ms" if on_cpu else ""
                    print(f"{preset:8s} {loader_name:6s} {m:16s} {ips:8.1f} img/s  data {100 * row['data_wait_share']:4.1f}%"
                          f"  compute {row['compute_ms_per_step']:7.1f} ms/step ({row['compute_cpu_ms_per_step']:.0f} CPU ms)"
                          f"{mix_part}  x{row['ratio_to_none']:.3f}",
                          flush=True)
                rec.record["loadavg_1min_after"] = __import__("common").load_average()
                out = write_results(args, rec, rows, device)
                v = verdict(rows, device).get(f"{preset}/{loader_name}", {})
                if v:
                    print(f"alignmixup vs none: {100 * v['alignmixup_slowdown']:+.1f}% time per image "
                          f"({'meets' if v['meets_target'] else 'misses'} the {100 * v['target']:.0f}% target)",
                          flush=True)
                if "ae_over_alignmixup" in v:
                    print(f"alignmixup_ae vs alignmixup: {100 * v['ae_over_alignmixup']:+.1f}% time per image "
                          f"({'meets' if v['ae_meets_target'] else 'misses'} the {100 * v['ae_target']:.0f}% target)",
                          flush=True)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
