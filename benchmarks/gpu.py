"""Every GPU measurement in one command (`make bench-gpu`), on a bare GPU machine.

Needs only torch, timm, torchvision and accelerate, with mixkit imported from the source tree
(``PYTHONPATH=.``): no virtual environment, no pip, no network. Packages that are absent (POT, ffcv,
DALI, matplotlib, triton) skip their rows with a note instead of failing.

Parts, each run as its own process (a crash or CUDA error in one cannot take the others down) with its
outcome and, on failure, the tail of its output recorded in the summary:
  solvers   benchmarks/solvers.py on CUDA over the benchmark grid: the default solver (the fused
            kernel, guarded), the torch solver, the fused kernel called directly, POT where installed
            (timed from CUDA tensors), the paper's solver. Writes solvers-cuda.json/.md/.png.
  overhead  benchmarks/overhead.py --preset cuda: the training-step overhead of every method for
            ResNet-50, bf16 autocast, channels_last, batch 256. Writes overhead-cuda.json/.png.
  loaders   benchmarks/loaders.py on CUDA, each backend that is installed. Writes loaders-cuda.json/.png.

Summary: gpu-<device>[-<tag>].json with the machine, the packages found, each part's status, and the
issue's targets read from the parts' results: B=256 7x7x2048 aligned (cost and solve) under 0.5 ms,
AlignMixup at most 3% over no mixing, and the GPU-free proxies (ops per solve, syncs per step).

``--device cpu --quick`` is a dry run of the same code paths on the CPU at toy sizes (into a fresh
temporary folder unless --out-dir is given), to check the script end to end without a GPU.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from common import MachineRecord, common_parser, resolve_device, result_path, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PARTS = ("solvers", "overhead", "loaders")
PACKAGES = {  # import name -> distribution name
    "torch": "torch", "torchvision": "torchvision", "timm": "timm", "accelerate": "accelerate",
    "triton": "triton", "ot": "pot", "ffcv": "ffcv", "nvidia.dali": "nvidia-dali-cuda130",
    "matplotlib": "matplotlib", "numpy": "numpy", "psutil": "psutil", "tqdm": "tqdm",
}
TARGET_ALIGN_MS = 0.5
TARGET_ALIGNMIXUP_OVERHEAD = 0.03


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing
        return False


def packages() -> dict[str, str | None]:
    """Version of each package that matters here, None when it is not installed."""
    found = {}
    for module, dist in PACKAGES.items():
        if not importable(module):
            found[dist] = None
            continue
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "installed (version unknown)"
    return found


def fashion_mnist_present() -> bool:
    from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT

    return Path(DEFAULT_FASHION_MNIST_ROOT).is_dir() and any(Path(DEFAULT_FASHION_MNIST_ROOT).iterdir())


def script_help(script: str) -> str:
    """The script's --help text ('' if it cannot even start), to pass only the options it has."""
    try:
        out = subprocess.run([sys.executable, str(HERE / script), "--help"], capture_output=True, text=True,
                             timeout=120, env=_env(), cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # mixkit from this tree (no install) and the benchmark helpers next to the scripts.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def commands(args: argparse.Namespace, device: torch.device, out_dir: Path) -> dict[str, tuple[list[str], list[str]]]:
    """part -> (command line, notes on what it leaves out and why)."""
    py = sys.executable
    cuda = device.type == "cuda"
    tag = ["--tag", args.tag] if args.tag else []
    cmds: dict[str, tuple[list[str], list[str]]] = {}

    notes = []
    solvers = [py, str(HERE / "solvers.py"), "--device", str(device), "--out-dir", str(out_dir), *tag]
    if not importable("ot"):
        notes.append("POT is not installed: the pot rows and the exact-EMD column are skipped")
        solvers.append("--no-emd")
    elif cuda:
        solvers.append("--pot-on-cuda")
    if not cuda:
        notes.append("no CUDA: the fused kernel's rows are skipped")
    elif not importable("triton"):
        notes.append("triton is not installed: the fused kernel's rows fail and the default runs the torch solver")
    if not fashion_mnist_present():
        notes.append("Debian's Fashion-MNIST is absent: no real-feature rows")
        solvers.append("--no-real")
    if args.quick:
        solvers += ["--batch-sizes", "8", "--shapes", "4x4x512", "7x7x2048", "--repeats", "1", "--budget-s", "1",
                    "--no-real"]
    cmds["solvers"] = (solvers, notes)

    overhead = [py, str(HERE / "overhead.py"), "--preset", "cuda", "--device", str(device), "--out-dir",
                str(out_dir), *tag]
    notes = []
    if args.quick:
        overhead += ["--model", "resnet18", "--img-size", "64", "--batch-size", "4", "--rounds", "2", "--steps", "1",
                     "--warmup", "1", "--breakdown-repeats", "2"]
        notes.append("quick: resnet18 at 64 px (a 2x2 last map), batch 4, not the ResNet-50 preset")
    cmds["overhead"] = (overhead, notes)

    help_text = script_help("loaders.py")
    backends = ["torch"] + [b for b, mod in (("ffcv", "ffcv"), ("dali", "nvidia.dali")) if importable(mod)]
    notes = [f"{b} is not installed: its rows are skipped" for b in ("ffcv", "dali") if b not in backends]
    loaders = [py, str(HERE / "loaders.py"), "--device", str(device), "--backends", *backends]
    loaders += ["--out-dir", str(out_dir), *tag]
    if args.quick:
        quick = {"--num-files": "32", "--rounds": "1", "--epochs": "1", "--warmup": "1", "--batch-size": "8",
                 "--img-size": "64", "--num-workers": "1"}
        loaders += [x for flag, value in quick.items() if flag in help_text for x in (flag, value)]
    cmds["loaders"] = (loaders, notes)
    return cmds


def run_part(name: str, cmd: list[str], notes: list[str], timeout_s: float) -> dict[str, Any]:
    """Runs one part in its own process, echoing its output: status, seconds, return code, output tail on failure."""
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    for note in notes:
        print(f"    note: {note}", flush=True)
    start = time.perf_counter()
    record: dict[str, Any] = {"command": cmd, "notes": notes}
    tail: collections.deque[str] = collections.deque(maxlen=30)
    try:
        proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
    except OSError as e:
        return {**record, "status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": 0.0}

    def pump() -> None:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            # Progress bars redraw with carriage returns: keep the last state of each line.
            tail.append(line.rstrip("\n").rsplit("\r", 1)[-1])

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        record["returncode"] = proc.wait(timeout=timeout_s)
        record["status"] = "ok" if record["returncode"] == 0 else "failed"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        record["status"] = "timed out"
        record["error"] = f"no result after {timeout_s:.0f} s (--part-timeout-s)"
    reader.join(timeout=10)
    record["seconds"] = round(time.perf_counter() - start, 1)
    if record["status"] != "ok":
        record["output_tail"] = "\n".join(tail)
    return record


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def targets(out_dir: Path, device: torch.device, tag: str) -> dict[str, Any]:
    """The issue's targets, read from the parts' result files (None where a part did not produce them)."""
    solvers = _load(result_path(out_dir, "solvers", device=device, tag=tag)) or {}
    overhead = _load(result_path(out_dir, "overhead-cuda", tag=tag)) or {}
    align = solvers.get("targets", {})
    verdict = overhead.get("verdict", {})
    ratio = verdict.get("alignmixup_ratio")
    proxy = overhead.get("cuda_sync_proxy", {})
    return {
        "align_b256_7x7x2048_ms": {
            "limit_ms": TARGET_ALIGN_MS,
            "measured_ms": align.get("cuda_time", {}).get("measured_ms"),
            "met_by": align.get("cuda_time", {}).get("met_by"),
            "on": device.type,
        },
        "alignmixup_overhead": {
            "limit": TARGET_ALIGNMIXUP_OVERHEAD, "ratio": ratio, "statistic": verdict.get("statistic"),
            "met": None if ratio is None or device.type != "cuda" else ratio - 1 <= TARGET_ALIGNMIXUP_OVERHEAD,
            "config": {k: overhead.get("config", {}).get(k) for k in ("model", "img_size", "batch_size", "amp",
                                                                       "channels_last")},
        },
        "ops_per_default_solve_proxy": align.get("cuda_ops"),
        "syncs_per_alignmixup_step_proxy": {
            "limit": proxy.get("target_syncs_per_alignmixup_step"),
            "max": proxy.get("max_syncs_per_alignmixup_step"), "met": proxy.get("meets_sync_target"),
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_parser(device="cuda")])
    p.set_defaults(out_dir=None)
    p.add_argument("--quick", action="store_true",
                   help="toy sizes (a dry run of every part; with --device cpu it needs no GPU)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which measurements to run")
    p.add_argument("--part-timeout-s", type=float, default=3600.0, help="give up on a part after this long")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.out_dir is None:
        args.out_dir = Path(tempfile.mkdtemp(prefix="mixkit-bench-gpu-")) if args.quick else HERE / "results"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = result_path(args.out_dir, "gpu", device=device, tag=args.tag)
    with MachineRecord(device) as rec:
        found = packages()
        parts: dict[str, Any] = {}
        for name, (cmd, notes) in commands(args, device, args.out_dir).items():
            if name not in args.parts:
                continue
            try:
                parts[name] = run_part(name, cmd, notes, args.part_timeout_s)
            except Exception as e:  # noqa: BLE001 (one part's failure must not lose the others)
                parts[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            # Written after every part: a run cut short keeps what it measured.
            write_json(summary_path, {"machine": rec.record, "quick": args.quick, "packages": found, "parts": parts})
    summary = {"machine": rec.record, "quick": args.quick, "packages": found, "parts": parts,
               "outputs": sorted(p.name for p in args.out_dir.iterdir() if not p.name.startswith(".")),
               "targets": targets(args.out_dir, device, args.tag)}
    write_json(summary_path, summary)
    print(f"\n{'part':<10} {'status':<10} seconds")
    for name, part in parts.items():
        print(f"{name:<10} {part['status']:<10} {part.get('seconds', '-')}")
    print(json.dumps(summary["targets"], indent=1))
    print(f"wrote {summary_path} (results in {args.out_dir})")
    return summary


if __name__ == "__main__":
    main()
