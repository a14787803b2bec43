"""Loader throughput (images/s) of the 'torch', 'ffcv' and 'dali' backends of mixkit.data.

Every backend runs the same training augmentation (RandomResizedCrop to --img-size with scale
(0.08, 1) and ratio (3/4, 4/3), horizontal flip, ImageNet normalisation) and delivers float NCHW
batches on the target device, on the same ImageFolder of real photos at ImageNet-like resolution:
--num-files JPEGs cut from the photos that ship with scikit-image and scikit-learn (random crops of
350-640 px, JPEG quality 75-95; built offline once under --data). ffcv reads a .beton written from
that folder with `mixkit convert`'s defaults (FFCV's ImageNet setup: longer side <= 512, half the
images stored raw, the rest JPEG quality 90); the conversion time is reported, not counted. Loaders
run with their defaults: ffcv hands out views into its ring of reused buffers (as FFCV's own Loader;
copy=True would add a fresh-tensor copy), torch and DALI return new tensors.

Both output layouts are measured (--layouts): NCHW (the contract's default; torch's transforms produce
it in the workers, ffcv transposes in its parallel stage, DALI writes CHW) and channels-last (ffcv's
and DALI's native HWC, no copy; torch converts in the main process).

Protocol: each backend is built (setup time reported: validation, .beton checks, compilation) and runs
--warmup epochs (ffcv compiles its pipeline with numba in its first epoch). Then --rounds rounds run
every backend in turn: one untimed epoch (it consumes what the loader prefetched while the others ran)
and --epochs timed epochs. images/s = images delivered / wall time of all timed epochs. On a shared
machine other jobs slow some epochs down (thread-parallel loaders such as ffcv's more than torch's
independent worker processes), so the best epoch is reported too, as the estimate of the uncontended
rate (the statistic of benchmarks/overhead.py), with the load average before and after. CUDA runs
synchronise before the clock stops.

Writes benchmarks/results/loaders-<device>.json and .png and prints a table. Only measured numbers are
reported, with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import common
import torch
from tqdm import tqdm

from mixkit.data import create_loader

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))  # the photo ImageFolder is a test fixture, not package API
from data_photos import build_photo_folder  # noqa: E402

BACKENDS = ("torch", "ffcv", "dali")


def loader_machine(device: torch.device) -> dict[str, Any]:
    versions = {}
    for name, dist in (("ffcv", "ffcv"), ("dali", "nvidia-dali-cuda130")):
        try:
            versions[name] = version(dist)
        except PackageNotFoundError:
            versions[name] = None
    return common.machine(device, **versions)


def source_for(backend: str, folder: Path, beton: Path) -> Path:
    return beton if backend == "ffcv" else folder


def run_epoch(loader, device: torch.device, desc: str) -> dict[str, float]:
    """One epoch: images delivered and wall time (CUDA synchronised at both ends)."""
    n = 0
    common.sync(device)
    start = time.perf_counter()
    for _images, labels in tqdm(loader, desc=desc, leave=False, total=len(loader)):
        n += labels.shape[0]
    common.sync(device)
    return {"images": n, "seconds": time.perf_counter() - start}


def bench(backends: list[str], sources: dict[str, Path], args: argparse.Namespace,
          device: torch.device, channels_last: bool) -> list[dict]:
    """Builds every loader, warms each up, then runs ``rounds`` rounds of blocks, one block per backend.

    A block is one untimed epoch followed by ``epochs`` timed ones: the untimed epoch consumes what a
    loader prefetched while the others ran (DALI keeps preparing batches between epochs), so the timed
    epochs measure steady-state streaming. Rounds interleave the backends, so that a load spike on a
    shared machine does not land on one backend only.
    """
    loaders, rows = {}, {}
    for b in backends:
        t0 = time.perf_counter()
        loaders[b] = create_loader(b, sources[b], batch_size=args.batch_size, is_training=True,
                                   img_size=args.img_size, num_workers=args.num_workers, device=device,
                                   channels_last=channels_last, seed=0)
        setup_s = time.perf_counter() - t0
        warm = [run_epoch(loaders[b], device, f"{b} warm-up") for _ in range(args.warmup)]
        rows[b] = {"backend": b, "layout": "channels_last" if channels_last else "nchw", "setup_s": setup_s,
                   "warmup_epoch_s": warm[0]["seconds"] if warm else None, "epochs": []}
    for r in range(args.rounds):
        for b in backends:
            run_epoch(loaders[b], device, f"{b} round {r} settle")  # untimed
            rows[b]["epochs"] += [run_epoch(loaders[b], device, f"{b} round {r}") for _ in range(args.epochs)]
    for row in rows.values():
        eps = row["epochs"]
        row["images_per_s"] = sum(e["images"] for e in eps) / sum(e["seconds"] for e in eps)
        row["best_epoch_images_per_s"] = max(e["images"] / e["seconds"] for e in eps)
        row["median_epoch_s"] = statistics.median(e["seconds"] for e in eps)
    return [rows[b] for b in backends]


def plot(rows: list[dict], path: Path, title: str) -> None:
    import numpy as np

    plt = common.pyplot()

    layouts = list(dict.fromkeys(r["layout"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    colours = {"torch": "#888888", "ffcv": "#1f77b4", "dali": "#76b900"}
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(backends)
    x = np.arange(len(layouts))
    for k, b in enumerate(backends):
        values = [next(r["images_per_s"] for r in rows if r["backend"] == b and r["layout"] == lay)
                  for lay in layouts]
        bars = ax.bar(x + (k - (len(backends) - 1) / 2) * width, values, width, label=b, color=colours.get(b))
        for bar, v in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{lay} output" for lay in layouts])
    ax.set_ylabel("training images / s")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, max(r["images_per_s"] for r in rows) * 1.18)
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[common.common_parser(out_dir=common.RESULTS_DIR)])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                        help="backends to measure")
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "loaders",
                        help="where the photo ImageFolder (reused when built with the same settings) and its .beton "
                             "(rewritten every run, to time the conversion) are built")
    parser.add_argument("--num-files", type=int, default=1200, help="JPEG files in the ImageFolder")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--img-size", type=int, default=224, help="output crop side in pixels")
    parser.add_argument("--num-workers", type=int, default=2,
                        help="worker processes (torch) or threads (ffcv, dali)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first (ffcv compiles in its first)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per backend and round")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds; each runs every backend in turn (an untimed settle epoch, then --epochs)")
    parser.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"],
                        choices=["nchw", "channels_last"],
                        help="output memory layouts to measure (each a full set of rounds)")
    args = parser.parse_args()

    device = common.resolve_device(args.device)
    folder = build_photo_folder(args.data / "photos", num_files=args.num_files)
    beton = args.data / "photos.beton"
    convert_s = None
    if "ffcv" in args.backends:
        from mixkit.data import write_beton
        t0 = time.perf_counter()
        write_beton(folder, beton, num_workers=args.num_workers)
        convert_s = time.perf_counter() - t0
    dev = device.type
    load_before = os.getloadavg()
    rows = []
    for layout in args.layouts:
        rows += bench(args.backends, {b: source_for(b, folder, beton) for b in args.backends}, args, device,
                      channels_last=layout == "channels_last")
    load_after = os.getloadavg()
    for r in rows:
        ref = next((t for t in rows if t["backend"] == "torch" and t["layout"] == r["layout"]), None)
        r["speedup_vs_torch"] = r["images_per_s"] / ref["images_per_s"] if ref else None
        r["best_epoch_speedup_vs_torch"] = (r["best_epoch_images_per_s"] / ref["best_epoch_images_per_s"]
                                            if ref else None)
    info = loader_machine(device)
    result = {"device": dev, "machine": info, "num_files": args.num_files, "batch_size": args.batch_size,
              "img_size": args.img_size, "num_workers": args.num_workers, "warmup": args.warmup,
              "epochs": args.epochs, "rounds": args.rounds, "beton_convert_s": convert_s,
              "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": load_after, "rows": rows}
    json_path = common.write_json(common.result_path(args.out_dir, "loaders", device=device, tag=args.tag), result)
    where = info.get("gpu") or f"{info['cpu']}, {info['cores']} cores"
    plot(rows, json_path.with_suffix(".png"),
         f"{args.num_files} photos, RRC {args.img_size} + flip, batch {args.batch_size}, "
         f"{args.num_workers} workers\n{dev}: {where}; load average {load_before[0]:.1f}-{load_after[0]:.1f}")
    print(f"\n{dev} ({where}); {args.num_files} JPEGs, batch {args.batch_size}, {args.img_size} px, "
          f"{args.num_workers} workers; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print("| output layout | backend | images/s | vs torch | best epoch images/s | vs torch (best) "
          "| setup s | warm-up epoch s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        speed = f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] else "-"
        best = f"{r['best_epoch_speedup_vs_torch']:.2f}x" if r["best_epoch_speedup_vs_torch"] else "-"
        print(f"| {r['layout']} | {r['backend']} | {r['images_per_s']:.0f} | {speed} | "
              f"{r['best_epoch_images_per_s']:.0f} | {best} | {r['setup_s']:.1f} | {r['warmup_epoch_s']:.1f} |")
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
