"""Shared by the benchmark scripts: where results go and how they are written, the standard options,
device sync and timing, what the machine was doing, and a counter of dispatched torch ops and host syncs.

The scripts run as ``python benchmarks/<name>.py`` (this folder is then first on ``sys.path``) and import
these helpers with ``from common import ...``; tests put this folder on ``sys.path`` the same way.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import json
import math
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mixkit.atomic import temp_file_beside

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS = RESULTS_DIR  # the name the scripts used before the helpers moved here

Clock = Callable[[], float]


# ----------------------------------------------------------------------------------------------------
# Options


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def common_parser(*, out_dir: Path = RESULTS_DIR, device: str | None = None) -> argparse.ArgumentParser:
    """The options every benchmark shares, as an argparse parent (``parents=[common_parser()]``).

    Args:
        out_dir: Default of ``--out-dir``.
        device: Default of ``--device``; None: CUDA when available, else the CPU.

    Returns:
        A parser without ``-h`` holding ``--device``, ``--out-dir`` and ``--tag``.
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common benchmark options")
    g.add_argument("--device", default=device or default_device(),
                   help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    g.add_argument("--out-dir", type=Path, default=out_dir, help=f"where the JSON and PNG go (default {out_dir})")
    g.add_argument("--tag", default="", help="suffix of the result files: <name>-<device>[-<tag>].json")
    return p


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device for ``--device``; a clear exit when CUDA is asked for but absent."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"--device {name!r} is not a torch device ({e}); use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name} but no CUDA device is available; use --device cpu")
    return device


def result_path(out_dir: Path, name: str, *, device: str | torch.device | None = None, tag: str = "",
                suffix: str = ".json") -> Path:
    """``out_dir/<name>[-<device type>][-<tag>]<suffix>``: one naming rule for every result file."""
    parts = [name]
    if device is not None:
        parts.append(torch.device(device).type)
    if tag:
        parts.append(tag)
    return Path(out_dir) / ("-".join(parts) + suffix)


# ----------------------------------------------------------------------------------------------------
# Writing results: always atomically (temp file in the same folder, then os.replace), so an
# interrupted run never leaves half a JSON or PNG in place of the last good one.


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_file_beside(path) as tmp:  # removed again if the body raises
        yield tmp
        os.replace(tmp, path)


def _plain(obj: Any) -> Any:
    """JSON-ready values: Paths, dtypes and devices as text, 1-element tensors and NumPy scalars as numbers,
    NaN/Inf as None (JSON has no such numbers)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (Path, torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        obj = obj.item()
    elif type(obj).__module__ == "numpy" and hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _not_serialisable(obj: Any) -> Any:
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable; convert it before writing the result")


def write_json(path: Path, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON atomically (non-finite floats become null)."""
    text = json.dumps(_plain(obj), indent=1, allow_nan=False, default=_not_serialisable) + "\n"
    return write_text(path, text)


def write_text(path: Path, text: str) -> Path:
    """Writes ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, *, dpi: int = 110) -> Path:
    """Saves a matplotlib figure as PNG atomically and closes it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        pyplot().close(fig)
    return Path(path)


# ----------------------------------------------------------------------------------------------------
# Device sync and timing


def sync(device: torch.device | str | None) -> None:
    """Waits for the device's queued work (CUDA runs asynchronously; CPU ops have finished on return)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


_sync = sync  # the old private name of the scripts


def timed(fn: Callable[[], Any], device: torch.device | str | None = None,
          clock: Clock = time.perf_counter) -> tuple[Any, float]:
    """Runs ``fn()`` once between two device syncs: (its result, seconds by ``clock``)."""
    sync(device)
    start = clock()
    out = fn()
    sync(device)
    return out, clock() - start


def time_min(fn: Callable[[], Any], device: torch.device | str | None = None, *, repeats: int = 10,
             warmup: int = 1, clock: Clock = time.perf_counter) -> float:
    """Minimum seconds of ``fn()`` over ``repeats`` synced runs after ``warmup`` untimed ones.

    The minimum is the estimate of the uncontended cost on a shared machine (other processes only
    ever add time).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    return min(timed(fn, device, clock)[1] for _ in range(repeats))


# ----------------------------------------------------------------------------------------------------
# The machine and its load


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> float | None:
    """1-minute load average: other processes on the machine show up here."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine(device: torch.device | None = None, **versions: str | None) -> dict[str, Any]:
    """CPU, cores, threads, Python/torch versions, the GPU when ``device`` is CUDA, plus ``versions``."""
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        **versions,
    }
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


class MachineRecord:
    """The machine and its load around a measurement: ``with MachineRecord(device) as rec: ...; rec.record``.

    Args:
        device: The device measured (its GPU name is recorded for CUDA).
        versions: Extra package versions to record (e.g. ``timm=timm.__version__``).
    """

    def __init__(self, device: torch.device | str | None = None, **versions: str | None) -> None:
        self.device = None if device is None else torch.device(device)
        self.versions = versions
        self.record: dict[str, Any] = {}

    def __enter__(self) -> MachineRecord:
        self.record = {**machine(self.device, **self.versions), "loadavg_1min_before": load_average()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.record["loadavg_1min_after"] = load_average()


def describe_machine(record: dict[str, Any]) -> str:
    """One line for tables and plot titles: device, cores, torch, load before/after."""
    where = record.get("gpu") or record.get("cpu", "unknown CPU")
    return (f"{where}, {record.get('cores')} cores, torch {record.get('torch')}; 1-min load average "
            f"{record.get('loadavg_1min_before')} before, {record.get('loadavg_1min_after')} after")


def uptime_load() -> str:
    """The 1-, 5- and 15-minute load averages as ``uptime`` prints them ('' where /proc is absent)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return ""


def git_state() -> dict[str, Any]:
    """The checkout's commit and whether ``mixkit/`` has uncommitted changes ({} outside a git checkout)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "mixkit"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "mixkit_uncommitted_changes": bool(dirty)}


# ----------------------------------------------------------------------------------------------------
# Golden files: the authors' outputs on fixed inputs, which the tests compare mixkit against


def golden_parser(description: str, *, repo: Path, out: Path, upstream: str) -> argparse.ArgumentParser:
    """The two options every ``golden_*.py`` script takes: the authors' fetched repository and the npz path."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repo", type=Path, default=repo, help=f"the fetched bare git dir of {upstream}")
    parser.add_argument("--out", type=Path, default=out, help="where the npz goes")
    return parser


def repo_commit(git_dir: Path) -> str:
    """The commit a bare git dir's HEAD points at (recorded in each golden file)."""
    import subprocess

    return subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def write_golden(path: Path, arrays: dict[str, Any], *, upstream: str, commit: str) -> Path:
    """Writes ``arrays`` (plus ``authors_commit``) as one compressed npz, atomically, and says so."""
    import io

    import numpy as np

    arrays = {**arrays, "authors_commit": np.array(commit)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    print(f"wrote {path} ({path.stat().st_size} bytes) from {upstream}@{commit[:12]}")
    return path


# ----------------------------------------------------------------------------------------------------
# Studies over seeds: subsets, per-method statistics and paired differences


def balanced_subset(labels: torch.Tensor, size: int, *, seed: int) -> torch.Tensor:
    """Indices of ``size`` samples, the same number from every class (seeded), in a seeded order.

    Raises:
        ValueError: ``size`` is smaller than the number of classes, or a class has too few samples.
    """
    classes = labels.unique()
    per_class = size // len(classes)
    if per_class < 1:
        raise ValueError(f"a class-balanced subset of {size} images needs at least {len(classes)}")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {int(c)} has {len(idx)} images, fewer than the {per_class} requested")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    picks = torch.cat(picks)
    return picks[torch.randperm(len(picks), generator=g)]


def _mean_std(values: list[float]) -> dict[str, Any]:
    import statistics

    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def per_method_stats(runs: list[dict[str, Any]], methods: list[str], metrics: list[str]) -> dict[str, Any]:
    """Mean, sample std and the values over seeds of each metric, per method.

    Args:
        runs: Records with ``method``, ``seed`` and ``metrics`` (name to number; a missing or None metric is
            left out of that metric's statistics).
        methods: Methods in report order (those without runs are left out).
        metrics: Metric names.

    Returns:
        ``{method: {"n": runs, "seeds": [...], metric: {"mean", "std", "values", "seeds"}}}``.
    """
    stats: dict[str, Any] = {}
    for m in methods:
        rs = sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"])
        if not rs:
            continue
        stats[m] = {"n": len(rs), "seeds": [r["seed"] for r in rs]}
        for k in metrics:
            have = [r for r in rs if r["metrics"].get(k) is not None]
            if have:
                vals = [r["metrics"][k] for r in have]
                stats[m][k] = {**_mean_std(vals), "values": vals, "seeds": [r["seed"] for r in have]}
    return stats


def paired_deltas(runs: list[dict[str, Any]], methods: list[str], higher_is_better: dict[str, bool], *,
                  reference: str) -> dict[str, Any]:
    """``reference`` minus every other method, seed by seed (same seed: same initial weights and data order).

    Returns:
        ``{method: {metric: {"seeds", "diffs", "mean", "std", "wins"}}}`` over the seeds both methods have
        the metric for; ``wins`` counts the seeds where the reference is better (higher, or lower where
        ``higher_is_better`` says False). Empty when the reference has no runs.
    """
    ref = {r["seed"]: r["metrics"] for r in runs if r["method"] == reference}
    out: dict[str, Any] = {}
    if not ref:
        return out
    for m in methods:
        other = {r["seed"]: r["metrics"] for r in runs if r["method"] == m}
        if m == reference or not other:
            continue
        out[m] = {}
        for k, higher in higher_is_better.items():
            seeds = sorted(s for s in set(ref) & set(other)
                           if ref[s].get(k) is not None and other[s].get(k) is not None)
            if not seeds:
                continue
            diffs = [ref[s][k] - other[s][k] for s in seeds]
            wins = sum((d > 0) if higher else (d < 0) for d in diffs)
            out[m][k] = {"seeds": seeds, "diffs": diffs, **_mean_std(diffs), "wins": wins}
    return out


# ----------------------------------------------------------------------------------------------------
# Counting dispatched ops and host syncs (the GPU-free proxy of issue 11)
#
# Written by hand: torch's own tools count FLOPs (torch.utils.flop_counter) or time kernels (the
# profiler, which needs the device to see launches); counting the ops that would launch and the ones
# that would wait for the device, on any device, needs only a TorchDispatchMode.

# Ops that return a value the host must read (torch tags them data_dependent_output: `.item()`,
# `bool(t)`, `float(t)` all end in _local_scalar_dense) or whose output shape depends on the values
# (dynamic_output_shape: nonzero, masked_select, unique, boolean indexing...): on CUDA each waits for
# the device. `equal` returns a Python bool.
_SYNC_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)
_SYNC_NAMES = frozenset({"equal", "is_nonzero", "item", "_local_scalar_dense"})


def _has_bool_index(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _device_to_host(name: str, args: tuple, kwargs: dict) -> bool:
    if name == "_to_copy" and args and isinstance(args[0], torch.Tensor):
        target = kwargs.get("device")
        return args[0].device.type != "cpu" and target is not None and torch.device(target).type == "cpu"
    if name == "copy_" and len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2]):
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return False


def sync_reason(func: Any, args: tuple, kwargs: dict) -> str | None:
    """Why an aten op would make the host wait for a CUDA device, or None when it would not."""
    name = func._schema.name.split("::")[-1]
    if _device_to_host(name, args, kwargs):
        return "device_to_host_copy"
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        # Integer indices stay on the device; a boolean mask is turned into indices with nonzero.
        return name if len(args) > 1 and _has_bool_index(args[1]) else None
    if name == "repeat_interleave" and kwargs.get("output_size") is not None:
        return None
    if name == "one_hot":
        num_classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
        return name if num_classes < 0 else None
    if name in _SYNC_NAMES or any(tag in func.tags for tag in _SYNC_TAGS):
        return name
    return None


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside the block, and those that would sync the host on CUDA.

    Runs on any device, so code meant for CUDA can be counted on CPU tensors: the ops seen here are the
    ones dispatched to the backend (composite ops are already decomposed, as on CUDA). Every counted op is
    roughly one kernel launch on a GPU, except views (``views``: metadata only, no launch).
    ``add_launches(n)`` adds launches counted by construction (e.g. one fused Triton kernel that cannot
    run here). ``paused()`` stops counting inside a block (work that stands in for a kernel).

    Attributes:
        ops: Count per op overload name (``"aten.bmm.default"``).
        syncs: Count per sync reason (``"_local_scalar_dense"``, ``"nonzero"``, ``"device_to_host_copy"``...).
        sync_sites: Count per ``file:line`` of the innermost Python frame outside torch that caused a sync.
        views: Ops among ``ops`` that only make views.
        extra_launches: Launches added by construction.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.syncs: collections.Counter[str] = collections.Counter()
        self.sync_sites: collections.Counter[str] = collections.Counter()
        self.views = 0
        self.extra_launches = 0
        self._paused = 0

    @property
    def num_ops(self) -> int:
        """Dispatched aten ops, views included, plus launches added by construction."""
        return sum(self.ops.values()) + self.extra_launches

    @property
    def num_launches(self) -> int:
        """Ops that would launch work on a GPU: ``num_ops`` without views."""
        return self.num_ops - self.views

    @property
    def num_syncs(self) -> int:
        """Ops that would make the host wait for the device on CUDA."""
        return sum(self.syncs.values())

    def add_launches(self, n: int = 1) -> None:
        self.extra_launches += n

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def reset(self) -> None:
        self.ops.clear()
        self.syncs.clear()
        self.sync_sites.clear()
        self.views = 0
        self.extra_launches = 0

    def summary(self, top: int = 10) -> dict[str, Any]:
        """JSON-ready counts: totals, syncs by reason and the most frequent ops."""
        return {"ops": self.num_ops, "launches": self.num_launches, "views": self.views,
                "extra_launches": self.extra_launches, "syncs": self.num_syncs, "syncs_by_reason": dict(self.syncs),
                "sync_sites": dict(self.sync_sites), "top_ops": dict(self.ops.most_common(top))}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._paused:
            self.ops[str(func)] += 1
            if func.is_view:
                self.views += 1
            reason = sync_reason(func, args, kwargs)
            if reason is not None:
                self.syncs[reason] += 1
                self.sync_sites[_caller_site()] += 1
        return func(*args, **kwargs)


_TORCH_DIRS = tuple({str(Path(torch.__file__).parent), str(Path(torch.__file__).resolve().parent)})


def _caller_site(depth: int = 2) -> str:
    """Where a sync comes from: ``path:line`` of the innermost ``depth`` frames outside torch and this file."""
    sites = []
    for frame in reversed(traceback.extract_stack()):
        name = frame.filename
        if name.startswith(_TORCH_DIRS) or Path(name).name == "common.py" or "/contextlib.py" in name:
            continue
        parts = Path(name).parts
        short = "/".join(parts[parts.index("mixkit"):]) if "mixkit" in parts else "/".join(parts[-2:])
        sites.append(f"{short}:{frame.lineno}")
        if len(sites) == depth:
            break
    return " <- ".join(sites) or "unknown"


def count_ops(fn: Callable[[], Any]) -> tuple[Any, OpCounter]:
    """Runs ``fn()`` under an :class:`OpCounter`: (its result, the counter)."""
    with OpCounter() as counter:
        out = fn()
    return out, counter


# ----------------------------------------------------------------------------------------------------
# mixkit.ot's CUDA code path, run on CPU tensors so that the proxy above can count it anywhere

class _CudaEmulation:
    def __init__(self, solver: Any, note: str) -> None:
        self.solver = solver
        self.note = note


class _FusedLaunchStub:
    """Stands in for the fused Triton kernel on CPU tensors: one launch by construction, a uniform plan.

    The uniform plan 1/(n*m) has exact marginals, so the first-shape plan check passes and the code after
    the launch runs as on a GPU; the outputs are written with counting paused, so only the launch counts.
    Integer outputs (per-problem iterations, converged flags) are set to 1.
    """

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        return self._launch

    @staticmethod
    def _launch(cost: torch.Tensor, plan: torch.Tensor, *outputs: Any, **kwargs: Any) -> None:
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        mode = _get_current_dispatch_mode()
        counting = isinstance(mode, OpCounter)
        if counting:
            mode.add_launches(1)
        with mode.paused() if counting else contextlib.nullcontext():
            plan.fill_(1.0 / (plan.shape[1] * plan.shape[2]))
            for t in outputs:
                if isinstance(t, torch.Tensor) and not t.is_floating_point():
                    t.fill_(1)


def _with_options(solver: Any, **options: Any) -> Any:
    """The solver with keyword options bound to its checked entry and to its kernel (what transport_plan runs)."""
    import dataclasses
    import functools

    kernel = solver.kernel or solver.solve
    return dataclasses.replace(solver, solve=functools.partial(solver.solve, **options),
                               kernel=functools.partial(kernel, **options))


@contextlib.contextmanager
def emulated_cuda_pipeline(*, solver: str = "default") -> Iterator[_CudaEmulation]:
    """Runs mixkit.ot's CUDA code path for ``solver`` on CPU tensors (for :class:`OpCounter`).

    Args:
        solver: "default" (what mixkit.ot's default solver runs on CUDA when triton imports: the fused
            kernel behind its first-shape guard), "triton" (the fused kernel called directly) or "torch"
            (the torch solver with its CUDA convergence-check period). The fused kernel's launch is
            stubbed by :class:`_FusedLaunchStub` and counted as one op.

    Yields:
        ``.solver``: what to pass as ``solver=`` to mixkit.ot's entry points; ``.note``: how it is emulated.

    Raises:
        NotImplementedError: mixkit.ot offers no way to run that path's logic on CPU tensors.
    """
    import inspect
    from unittest import mock

    from mixkit.ot import get_solver
    from mixkit.ot import triton_solver as fused

    if solver in ("default", "triton"):
        if not hasattr(fused, "_build_kernel"):
            raise NotImplementedError("mixkit.ot.triton_solver has no _build_kernel to stub")
        stub = lambda *a, **k: (_FusedLaunchStub(), True)  # noqa: E731  (kernel, interpreted: host tensors allowed)
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(fused, "_build_kernel", stub))
            note = "fused Triton kernel: its launch counted as 1 op by construction, the torch ops around it counted"
            if solver == "default":
                try:
                    from mixkit.ot import default_solver
                except ImportError as e:
                    raise NotImplementedError("mixkit.ot has no default_solver module") from e
                if hasattr(default_solver, "_build_kernel"):
                    stack.enter_context(mock.patch.object(default_solver, "_build_kernel", stub))
                stack.enter_context(mock.patch.object(default_solver, "resolve_solver", lambda device: "triton"))
                # Each emulation starts from a fresh guard (first solve of a shape: its one-sync check)
                # and leaves none of its shapes behind for real solves.
                default_solver.reset_guard()
                stack.callback(default_solver.reset_guard)
                note = "default solver as on CUDA: " + note + ", behind the first-shape guard"
            yield _CudaEmulation(solver, note)
        return
    if solver == "torch":
        from mixkit.ot import schedule

        base = get_solver("torch")
        params = inspect.signature(base.kernel or base.solve).parameters
        if "check_every" not in params or not hasattr(schedule, "default_check_every"):
            raise NotImplementedError("mixkit.ot.sinkhorn_torch has no check_every / default_check_every to run "
                                      "its CUDA schedule on CPU tensors")
        every = schedule.default_check_every("cuda", base.max_iter)
        emulated = _with_options(base, check_every=every)
        yield _CudaEmulation(emulated, f"torch solver with check_every={every} (its CUDA schedule) on CPU tensors")
        return
    raise ValueError(f"solver must be 'default', 'triton' or 'torch', got {solver!r}")


@contextlib.contextmanager
def emulated_cuda_step(*, solver: str = "default") -> Iterator[_CudaEmulation]:
    """:func:`emulated_cuda_pipeline` plus mixkit.mix's CUDA-side label check, for whole training steps.

    On CUDA, ``mixkit.mix.labels.LabelRangeCheck`` queues each batch's label range as a non-blocking copy
    and reads it steps later without waiting; on CPU tensors it checks at once (two host reads). Here
    its CUDA logic is stood in for by the same device-side ops (``aminmax``, ``stack``) with no read,
    so the count is the CUDA step's. Where mixkit.mix has no such check, nothing is patched.
    """
    from unittest import mock

    with emulated_cuda_pipeline(solver=solver) as emu, mock.patch.object(torch.Tensor, "cpu", _counted_cpu), \
            contextlib.ExitStack() as host_work:
        emu.note += "; Tensor.cpu() counted as a device-to-host copy (a no-op on CPU tensors, a sync on CUDA)"
        for module_name, names in HOST_FUNCTIONS.items():
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for name in names:
                host_work.enter_context(mock.patch.object(module, name, _uncounted(getattr(module, name))))
            emu.note += f"; {module_name}'s host work ({', '.join(names)}) not counted"
        try:
            from mixkit.mix.labels import LabelRangeCheck
        except ImportError:
            yield emu
            return

        def queued_check(self: Any, target: torch.Tensor) -> None:
            torch.stack(torch.aminmax(target))  # what CUDA queues; read back later, never waited for

        with mock.patch.object(LabelRangeCheck, "__call__", queued_check):
            emu.note += "; label range check: its CUDA logic (device-side aminmax, no host read)"
            yield emu


# Functions that run on the host on the CUDA pipeline too (after a counted device-to-host copy): their ops
# are host work, neither launches nor syncs on CUDA, so an emulated step does not count them. A method with
# host work (graph cuts, say) adds its functions here, as looked up by the module that calls them.
HOST_FUNCTIONS = {"mixkit.mix.comixup": ("compatibility", "assign_blocks", "label_weights")}
_tensor_cpu = torch.Tensor.cpu


def _uncounted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with an active :class:`OpCounter` paused while it runs."""
    import functools

    from torch.utils._python_dispatch import _get_current_dispatch_mode

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mode = _get_current_dispatch_mode()
        with mode.paused() if isinstance(mode, OpCounter) else contextlib.nullcontext():
            return fn(*args, **kwargs)

    return wrapper


def _counted_cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``Tensor.cpu`` that an active :class:`OpCounter` counts as a device-to-host copy.

    In an emulated CUDA step every tensor of the step stands for a device tensor, and code moves a tensor to
    the host only where it lives on the device (the host graph cuts of Co-Mixup, OpenCV's saliency); on CPU
    tensors ``.cpu()`` dispatches nothing, so without this the copy, a sync on CUDA, would go unseen.
    """
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    mode = _get_current_dispatch_mode()
    if isinstance(mode, OpCounter) and self.device.type == "cpu" and not mode._paused:
        mode.syncs["device_to_host_copy"] += 1
        mode.sync_sites[_caller_site()] += 1
    return _tensor_cpu(self, *args, **kwargs)
