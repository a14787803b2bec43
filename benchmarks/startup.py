"""Start-up cost of ImageFolder checking: ``scan_image_folder`` under each ``--validate`` mode.

On the photo ImageFolder of benchmarks/loaders.py (--num-files JPEGs of 350-640 px cut from the photos that
ship with scikit-image and scikit-learn, built offline once under --data), times one scan per mode:
'none' (file extensions), 'header' (PIL reads each header), 'full' on a first start (every file decoded,
the verdicts written to the cache) and 'full' on a later start (the cache answers: one stat per file). Every
mode runs --repeats times in interleaved rounds; the minimum is reported (the uncontended estimate on a
shared machine) with the median and the load average. The cache goes to a temporary folder, cleared before
each first-start scan. The OS page cache is warm after the first round in every mode, as on a machine that
starts a run again.

Writes benchmarks/results/startup-cpu.json and .png and prints a table. Only measured numbers are reported,
with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

from mixkit.data import scan_image_folder

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))  # the photo ImageFolder is a test fixture, not package API
from data_photos import build_photo_folder  # noqa: E402

MODES = ("none", "header", "full (first start)", "full (cached)")


def scan_once(folder: Path, mode: str, cache: Path, threads: int) -> float:
    if mode == "full (first start)":
        shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    index = scan_image_folder(folder, validate=mode.split()[0], num_threads=threads)
    seconds = time.perf_counter() - start
    assert len(index) > 0
    return seconds


def plot(rows: list[dict], path: Path, title: str) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    values = [r["min_s"] for r in rows]
    bars = ax.barh([r["mode"] for r in rows][::-1], values[::-1], color="#1f77b4")
    for bar, r in zip(bars, rows[::-1], strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['min_s']:.3f} s ({r['ms_per_file']:.3f} ms/file)",
                va="center", fontsize=8)
    ax.set_xlabel("seconds per start (minimum of the repeats)")
    ax.set_xlim(0, max(values) * 1.6)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[common.common_parser(out_dir=common.RESULTS_DIR, device="cpu")])
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "loaders",
                        help="where the photo ImageFolder is built (shared with loaders.py)")
    parser.add_argument("--num-files", type=int, default=1200, help="JPEG files in the ImageFolder")
    parser.add_argument("--threads", type=int, default=None, help="validation threads (default: the CPU count)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each scans once in every mode")
    args = parser.parse_args()
    if common.resolve_device(args.device).type != "cpu":
        raise SystemExit("startup.py measures CPU work (file checking): use --device cpu")

    folder = build_photo_folder(args.data / "photos", num_files=args.num_files)
    threads = args.threads or os.cpu_count() or 1
    times: dict[str, list[float]] = {m: [] for m in MODES}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        os.environ["MIXKIT_VALIDATE_CACHE"] = str(cache)
        for _ in range(args.repeats):
            for mode in MODES:  # the first-start scan writes the cache the cached scan then reads
                times[mode].append(scan_once(folder, mode, cache, threads))
    load_after = os.getloadavg()
    rows = [{"mode": m, "min_s": min(t), "median_s": statistics.median(t), "ms_per_file": 1000 * min(t) / args.num_files,
             "seconds": t} for m, t in times.items()]
    info = common.machine(None)
    result = {"num_files": args.num_files, "threads": threads, "repeats": args.repeats, "machine": info,
              "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": load_after, "rows": rows}
    json_path = common.write_json(common.result_path(args.out_dir, "startup", device="cpu", tag=args.tag), result)
    where = f"{info['cpu']}, {info['cores']} cores"
    plot(rows, json_path.with_suffix(".png"),
         f"scan_image_folder of {args.num_files} photo JPEGs, {threads} threads\n{where}; load average "
         f"{load_before[0]:.1f}-{load_after[0]:.1f}")
    print(f"\n{where}; {args.num_files} JPEGs, {threads} threads; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after")
    print("| --validate | min s | median s | ms per file (min) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['min_s']:.3f} | {r['median_s']:.3f} | {r['ms_per_file']:.3f} |")
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
