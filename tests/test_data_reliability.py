"""Nothing lost, nothing silent (issue 7, data items): each test states a principle and checks it beyond
one example. Cases that could abort the process (ffcv on a bad file) run in a subprocess, so that an abort
fails the test instead of killing pytest."""
from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import make_colour_folder, run_epoch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from mixkit.data import BadSampleWarning, create_loader, scan_image_folder

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (the tests folder importable); an abort is a negative rc."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def beton_layout(path: Path) -> dict[str, int]:
    """Offsets of a .beton's regions, read with ffcv's own record types (an independent reading)."""
    from ffcv.types import FieldDescType, HeaderType

    from mixkit.data import check_beton

    header = np.fromfile(path, HeaderType, count=1)[0]
    info = check_beton(path)
    fields_end = HeaderType.itemsize + int(header["num_fields"]) * FieldDescType.itemsize
    return {"fields": fields_end, "alloc": int(header["alloc_table_ptr"]), "size": path.stat().st_size,
            "n": info.num_samples}


# 1. A file that is not complete is never accepted -------------------------------------------------------

@pytest.mark.slow
def test_incomplete_beton_is_refused_never_aborts(tmp_path):
    pytest.importorskip("ffcv")
    from mixkit.data import write_beton

    colour = make_colour_folder(tmp_path / "f", (3, 3))
    full = write_beton(colour.root, tmp_path / "full.beton", num_workers=1, write_mode="raw").paths[0]
    lay = beton_layout(full)
    data = full.read_bytes()
    offsets = sorted({0, 10, lay["fields"] - 1, lay["fields"] + 3, (lay["fields"] + lay["alloc"]) // 2,
                      lay["alloc"] - 1, lay["alloc"] + 7, lay["alloc"] + 24, lay["size"] - 1})
    cases = tmp_path / "cases"
    cases.mkdir()
    for off in offsets:
        (cases / f"cut-{off:07d}.beton").write_bytes(data[:off])
    unfinished = bytearray(data)
    unfinished[16:24] = bytes(8)  # header written, allocation table pointer never set (killed writer)
    (cases / "unfinished.beton").write_bytes(bytes(unfinished))
    code = f"""
        import sys, pathlib
        from mixkit.data import create_loader
        for path in [pathlib.Path({str(full)!r})] + sorted(pathlib.Path({str(cases)!r}).glob("*.beton")):
            print("TRY", path.name, flush=True)
            for training in (False, True):
                try:
                    loader = create_loader("ffcv", path, batch_size=2, is_training=training, img_size=16,
                                           device="cpu", num_workers=1)
                    n = sum(len(y) for _, y in loader)
                    print("LOADED", path.name, training, n, flush=True)
                except ValueError as e:
                    print("REFUSED", path.name, training, str(e).replace(chr(10), " "), flush=True)
    """
    result = run_python(code)
    assert result.returncode == 0, \
        f"aborted (rc {result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}"
    lines = [line.split(" ", 3) for line in result.stdout.splitlines()
             if line.startswith(("LOADED", "REFUSED"))]
    assert [(w[0], w[1]) for w in lines if w[1] == "full.beton"] == [("LOADED", "full.beton")] * 2
    cut = [w for w in lines if w[1] != "full.beton"]
    assert len(cut) == 2 * (len(offsets) + 1)
    for word, name, _, msg in cut:
        assert word == "REFUSED", f"{name} was loaded"
        assert "not a readable FFCV .beton" in msg and "mixkit convert" in msg, msg


# 2. Images the backend cannot process are caught before any decoding --------------------------------

@pytest.mark.slow
def test_images_too_small_for_ffcv_are_refused_or_skipped(tmp_path):
    pytest.importorskip("ffcv")
    colour = make_colour_folder(tmp_path / "f", (3, 3))
    Image.new("RGB", (1, 1), (200, 10, 10)).save(colour.root / "class_0" / "one.png")
    Image.new("RGB", (2000, 3), (10, 200, 10)).save(colour.root / "class_1" / "sliver.png")  # 0 px at 512
    code = f"""
        import warnings, numpy as np
        from ffcv.fields import IntField, RGBImageField
        from ffcv.writer import DatasetWriter
        from mixkit.data import BadSampleWarning, create_loader, write_beton
        root, tmp = {str(colour.root)!r}, {str(tmp_path)!r}
        try:
            write_beton(root, tmp + "/a.beton", num_workers=1)
            raise SystemExit("converted an image ffcv cannot decode")
        except ValueError as e:
            assert "2 bad file" in str(e) and "one.png" in str(e) and "sliver.png" in str(e), e
            assert "too small for ffcv" in str(e), e
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            write_beton(root, tmp + "/b.beton", num_workers=1, skip_corrupt=True)
        assert any(issubclass(x.category, BadSampleWarning) for x in w)
        loader = create_loader("ffcv", tmp + "/b.beton", batch_size=4, is_training=False, img_size=8,
                               device="cpu", num_workers=1)
        assert loader.num_skipped == 2 and sum(len(y) for _, y in loader) == 6

        class Pairs:  # a .beton from other tools holding a 1x1 image
            def __len__(self): return 3
            def __getitem__(self, i): return np.full((1 if i == 1 else 8, 8, 3), 90, np.uint8), 0
        DatasetWriter(tmp + "/c.beton", {{"image": RGBImageField(), "label": IntField()}},
                      num_workers=1).from_indexed_dataset(Pairs())
        try:
            create_loader("ffcv", tmp + "/c.beton", batch_size=2, is_training=False, img_size=8, device="cpu")
            raise SystemExit("accepted a .beton with an image that aborts ffcv's centre crop")
        except ValueError as e:
            assert "1 sample(s) (e.g. #1) cannot be decoded" in str(e) and "crop_pct" in str(e), e
        # Training crops never come out empty: the same file trains.
        train = create_loader("ffcv", tmp + "/c.beton", batch_size=3, is_training=True, img_size=8,
                              device="cpu")
        assert sum(len(y) for _, y in train) == 3
        print("OK")
    """
    result = run_python(code)
    assert result.returncode == 0 and "OK" in result.stdout, \
        f"rc {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"


def test_images_too_large_for_ffcv_are_refused_before_its_writer(tmp_path):
    """ffcv stores sides as uint16: a side above 65,535 px hangs its writer, so it is refused first."""
    pytest.importorskip("ffcv")
    from mixkit.data.beton import ffcv_size_problem

    assert "too large for ffcv" in ffcv_size_problem(70_000, 4)
    assert ffcv_size_problem(70_000, 700, max_resolution=512) is None  # resized below the limit
    assert ffcv_size_problem(65_535, 4) is None
    colour = make_colour_folder(tmp_path / "f", (2, 2))
    Image.new("RGB", (70_000, 2), (10, 200, 10)).save(colour.root / "class_0" / "wide.png")
    code = f"""
        from mixkit.data import write_beton
        try:
            write_beton({str(colour.root)!r}, {str(tmp_path / "a.beton")!r}, num_workers=1, max_resolution=None)
            raise SystemExit("converted an image ffcv cannot store")
        except ValueError as e:
            assert "1 bad file" in str(e) and "wide.png" in str(e) and "too large for ffcv" in str(e), e
        print("OK")
    """
    result = run_python(code, timeout=300)  # the old code hung in ffcv's writer
    assert result.returncode == 0 and "OK" in result.stdout, \
        f"rc {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_tiny_images_decode_in_imagefolder_backends(backend, tmp_path):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    root = tmp_path / "f"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "a" / "one.png")
    Image.new("RGB", (3, 400), (200, 10, 10)).save(root / "a" / "sliver.png")
    # Random crops of a 1x1 image round to 0 px sides in about 1 draw in 4 (timm's crop alone turned them
    # into all-black images): many seeded training epochs, every image keeps its colour.
    random.seed(0)
    torch.manual_seed(0)
    for training, epochs in ((False, 1), (True, 12)):
        loader = create_loader(backend, root, batch_size=1, is_training=training, img_size=8, device="cpu",
                               num_workers=0 if backend == "torch" else 1)
        for _ in range(epochs):
            batches = [x for x, _ in loader]
            assert len(batches) == 2 and all(x.shape == (1, 3, 8, 8) for x in batches)
            for x in batches:
                rgb = x.mean(dim=(2, 3))[0] * torch_std() + torch_mean()
                assert np.allclose(rgb.numpy(), [200, 10, 10], atol=3), (training, rgb)


def torch_mean():
    import torch
    return torch.tensor(IMAGENET_DEFAULT_MEAN) * 255


def torch_std():
    import torch
    return torch.tensor(IMAGENET_DEFAULT_STD) * 255


# 3. An existing output is replaced only by a complete new one --------------------------------------------

def _convert(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "mixkit.cli", "convert", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir())}
    return {p.name: p.read_bytes() for p in (path, Path(str(path) + ".json")) if p.exists()}


def _kill_at_fractions(args: list[str], out: Path, old: dict[str, bytes], check_new, fractions) -> Counter:
    """Runs the conversion once to time it, then kills it (SIGKILL, whole process group) at each fraction
    of that time; after each kill the output must be the old one, byte for byte, or a complete new one
    (``check_new``: conversions need not be byte-identical, ffcv draws which images it compresses)."""
    start = time.perf_counter()
    proc = _convert(args)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    full = time.perf_counter() - start
    check_new(out)
    outcomes = Counter()
    for f in fractions:
        _restore(out, old)
        proc = _convert(args)
        time.sleep(f * full)
        workers = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert not _survivors(workers), "a worker outlived the killed conversion"
        if _snapshot(out) == old:
            outcomes["old"] += 1
        else:
            check_new(out)  # raises unless complete and consistent
            outcomes["new"] += 1
    return outcomes


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _survivors(processes: list, timeout: float = 10.0) -> list:
    """The processes still running (not zombies: reparented ones may never be reaped here) after ``timeout``."""
    import psutil

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while any(running(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in processes if running(p)]
    for p in alive:  # leave nothing behind, whatever the test says
        p.kill()
    return alive


@pytest.mark.slow
def test_convert_killed_alone_leaves_no_worker_behind(tmp_path):
    """SIGKILL on the convert process only (the OOM killer's way, not the whole group): ffcv's forked writer
    workers wait on a queue the dead parent fed and slept forever, holding their memory. With many small
    tasks the queue outgrows its pipe's buffer, which is how the workers were left waiting."""
    pytest.importorskip("ffcv")
    import psutil

    root = make_colour_folder(tmp_path / "f", (1500, 1500), size=(16, 16)).root
    proc = _convert([str(root), str(tmp_path / "out.beton"), "--num-workers", "2", "--chunk-size", "1"])
    deadline = time.monotonic() + 120
    workers: list = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [p for p in _descendants(proc.pid) if "resource_tracker" not in " ".join(_cmdline(p))]
        if len(workers) >= 2:
            break
        time.sleep(0.05)
    assert len(workers) >= 2, "the writer's workers never started"
    time.sleep(0.3)  # the workers are busy
    everything = _descendants(proc.pid)  # the workers and multiprocessing's resource tracker
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    alive = _survivors(everything)
    assert not alive, f"processes outlived the killed convert: {[(p.pid, _cmdline(p)) for p in alive]}"
    assert psutil.pid_exists(os.getpid())


def _cmdline(p) -> list[str]:
    import psutil

    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize("mechanism", ["prctl", "watchdog"])
def test_forked_children_exit_with_their_parent(mechanism, tmp_path):
    """mixkit.parent_death on both of its mechanisms: Linux's parent-death signal, and the getppid watchdog
    used where prctl is unavailable (forced here by hiding prctl)."""
    import psutil

    code = f"""
        import os, sys, time
        import mixkit.parent_death as pd
        if {mechanism!r} == "watchdog":
            pd._prctl = None
        with pd.children_exit_with_parent():
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(w, (str(pd.armed) + "\\n").encode())
                time.sleep(120)
                os._exit(0)
        assert pd.armed is None  # the parent itself is not tied to anything
        print(pid, os.read(r, 100).decode().strip(), flush=True)
        time.sleep(120)
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True, env=env)
    child_pid, used = parent.stdout.readline().split()
    assert used == mechanism
    child = psutil.Process(int(child_pid))
    assert child.is_running()
    parent.kill()
    parent.wait(timeout=30)
    assert not _survivors([child], timeout=5.0), "the child outlived its parent"
    # Outside the block a fork is left alone (a long-lived process's children are not tied to it).
    import mixkit.parent_death as pd

    assert pd._depth == 0


def _restore(out: Path, files: dict[str, bytes]) -> None:
    if out.is_dir():
        shutil.rmtree(out)
        out.mkdir()
        for name, data in files.items():
            (out / name).write_bytes(data)
    else:
        for name, data in files.items():
            (out.parent / name).write_bytes(data)


@pytest.mark.slow
def test_killed_or_failed_convert_keeps_the_old_beton(tmp_path):
    pytest.importorskip("ffcv")
    from mixkit.data import check_beton, write_beton
    from mixkit.data.beton import read_sidecar

    old_root = make_colour_folder(tmp_path / "old", (2, 2)).root
    new_root = make_colour_folder(tmp_path / "new", (10, 10), size=(64, 64)).root
    out = tmp_path / "out.beton"
    write_beton(old_root, out, num_workers=1)
    old = _snapshot(out)
    assert set(old) == {"out.beton", "out.beton.json"}

    from mixkit.cli import main
    for bad in (["--chunk-size", "0"], ["--num-workers", "0"], ["--jpeg-quality", "101"],
                ["--compress-probability", "2"], ["--shard-size", "0"], ["--max-resolution", "-1"]):
        assert main(["convert", str(new_root), str(out), *bad]) == 2
        assert _snapshot(out) == old, f"{bad} touched the output"
    assert main(["convert", str(tmp_path / "missing"), str(out)]) == 2 and _snapshot(out) == old

    def check_new(path):
        info = check_beton(path)
        assert info.num_samples == 20 and read_sidecar(path, info)["num_samples"] == 20

    outcomes = _kill_at_fractions([str(new_root), str(out), "--num-workers", "1"], out, old, check_new,
                                  (0.3, 0.7, 0.9))
    assert outcomes["old"] >= 1  # the early kills left the old dataset in place
    # The next conversion removes what a killed one left (its temporaries, if the kill came after they
    # were made), and says so; tests/test_atomic.py checks the mechanism on a writer killed in the block.
    left = list(tmp_path.glob(".*tmp-*"))
    proc = _convert([str(new_root), str(out), "--num-workers", "1"])
    assert proc.wait(timeout=300) == 0
    assert ("left by a killed writer" in proc.stderr.read().decode()) == bool(left)
    check_new(out)
    assert not list(tmp_path.glob(".*tmp-*"))


def test_file_failing_during_the_write_leaves_no_output(tmp_path, monkeypatch):
    """A file that changes after validation fails in ffcv's writer process, which would hang the writer:
    it is recorded, the whole new file is refused, and the old output stays."""
    pytest.importorskip("ffcv")
    from mixkit.data import convert, write_beton

    colour = make_colour_folder(tmp_path / "f", (2, 2))
    out = tmp_path / "out.beton"
    out.write_bytes(b"old")
    real = convert.load_rgb

    def flaky(path):  # the writer's worker processes are forked, so they see this too
        if path.endswith("001.jpg"):
            raise OSError("gone")
        return real(path)

    monkeypatch.setattr(convert, "load_rgb", flaky)
    with pytest.raises(ValueError, match=r"(?s)failed to read while writing.*001.jpg: OSError: gone"):
        write_beton(colour.root, out, num_workers=1)
    assert out.read_bytes() == b"old" and not Path(str(out) + ".json").exists()
    assert not list(tmp_path.glob(".*tmp-*"))


def test_sidecar_must_describe_the_beton_beside_it(tmp_path):
    pytest.importorskip("ffcv")
    from mixkit.data import write_beton

    a = write_beton(make_colour_folder(tmp_path / "a", (2, 2)).root, tmp_path / "a.beton", num_workers=1)
    b = write_beton(make_colour_folder(tmp_path / "b", (3,)).root, tmp_path / "b.beton", num_workers=1)
    shutil.copy(Path(str(b.paths[0]) + ".json"), Path(str(a.paths[0]) + ".json"))
    with pytest.raises(ValueError, match="does not describe the .beton beside it"):
        create_loader("ffcv", a.paths[0], batch_size=2, is_training=False, device="cpu")


# 4. An output directory holds exactly one conversion ------------------------------------------------

def test_wds_directory_holds_one_conversion(tmp_path):
    from mixkit.data import write_webdataset

    big = make_colour_folder(tmp_path / "big", (6, 6))
    small = make_colour_folder(tmp_path / "small", (2, 2))
    out = tmp_path / "wds"
    write_webdataset(big.root, out, shard_size=3)
    before = _snapshot(out)
    with pytest.raises(ValueError, match="not empty .*--overwrite"):
        write_webdataset(small.root, out, shard_size=3)
    assert _snapshot(out) == before
    write_webdataset(small.root, out, shard_size=3, overwrite=True)
    index = json.loads((out / "shard.json").read_text())
    assert sorted(p.name for p in out.glob("*.tar")) == index["shards"] == \
        ["shard-000000.tar", "shard-000001.tar"]
    assert index["num_samples"] == 4
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to replace"):
        write_webdataset(small.root, out, shard_size=3, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    write_webdataset(small.root, tmp_path / "empty", shard_size=10)  # an empty directory is fine
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary left after success


def test_dali_reads_only_the_listed_shards(tmp_path):
    pytest.importorskip("nvidia.dali")
    from mixkit.data import write_webdataset

    big = make_colour_folder(tmp_path / "big", (5, 5, 5))
    small = make_colour_folder(tmp_path / "small", (2, 3))
    write_webdataset(big.root, tmp_path / "big-wds", shard_size=4)
    out = tmp_path / "wds"
    write_webdataset(small.root, out, shard_size=2)
    shutil.copy(tmp_path / "big-wds" / "shard-000003.tar", out / "shard-000003.tar")  # a stray old shard
    loader = create_loader("dali", out, batch_size=2, is_training=False, img_size=16, device="cpu")
    ids, labels, _ = run_epoch(loader)
    assert Counter(ids) == Counter(small.colour_of.values()) and loader.classes == small.classes
    assert labels == [small.class_of_colour[i] for i in ids]
    (out / "shard-000001.tar").unlink()
    with pytest.raises(FileNotFoundError, match="shard-000001.tar"):
        create_loader("dali", out, batch_size=2, is_training=False, device="cpu")


@pytest.mark.slow
def test_killed_wds_convert_keeps_the_old_directory(tmp_path):
    from mixkit.data import write_webdataset

    old_root = make_colour_folder(tmp_path / "old", (2, 2)).root
    new_root = make_colour_folder(tmp_path / "new", (10, 10), size=(96, 96)).root
    out = tmp_path / "wds"
    write_webdataset(old_root, out, shard_size=3)
    old = _snapshot(out)

    def check_new(path):
        index = json.loads((path / "shard.json").read_text())
        assert index["num_samples"] == 20 and sorted(p.name for p in path.glob("*.tar")) == index["shards"]

    _kill_at_fractions([str(new_root), str(out), "--format", "wds", "--shard-size", "7", "--overwrite"],
                       out, old, check_new, (0.5, 0.9))


# 5, 6. Hidden entries at any depth are not data; each file is read once ----------------------------------

def _loader_ids(root, **kw):
    loader = create_loader("torch", root, batch_size=4, is_training=False, img_size=16, device="cpu",
                           num_workers=0, **kw)
    return run_epoch(loader)[0], loader


def test_hidden_entries_at_any_depth_are_ignored(tmp_path):
    colour = make_colour_folder(tmp_path / "f", (2, 2))
    extra = make_colour_folder(tmp_path / "x", (4,))
    hidden = [colour.root / "class_0" / ".ipynb_checkpoints", colour.root / "class_1" / ".trash" / "deep",
              colour.root / "class_1" / "sub" / ".cache"]
    for d, src in zip(hidden, extra.files, strict=False):
        d.mkdir(parents=True)
        shutil.copy(src, d / "x.jpg")
    shutil.copy(extra.files[3], colour.root / "class_1" / "sub" / "kept.jpg")  # a visible sub-folder is data
    index = scan_image_folder(colour.root)
    expected = colour.files[:2] + colour.files[2:] + [str(colour.root / "class_1" / "sub" / "kept.jpg")]
    assert sorted(p for p, _ in index.samples) == sorted(expected)
    assert all("/." not in p for p, _ in index.samples)
    ids, _ = _loader_ids(colour.root)
    assert Counter(ids) == Counter([*colour.colour_of.values(), extra.colour_of[extra.files[3]]])


def test_each_file_is_read_once_through_links(tmp_path):
    colour = make_colour_folder(tmp_path / "f", (3, 3))
    c0 = colour.root / "class_0"
    os.symlink(c0, c0 / "loop")                      # a loop back to the class folder
    os.symlink(colour.root, c0 / "up")               # a loop through the root
    os.symlink(colour.files[4], c0 / "again.jpg")    # the same file as one of class_1
    with pytest.raises(ValueError, match="3 bad file") as e:
        scan_image_folder(colour.root)
    msg = str(e.value)
    assert "symlink loop" in msg and "the same file as" in msg
    assert max(len(line) for line in msg.splitlines()) < 400  # named briefly, not 40 levels deep
    assert "loop/loop" not in msg
    with pytest.warns(BadSampleWarning, match="skipped 3 bad file"):
        ids, loader = _loader_ids(colour.root, skip_corrupt=True)
    assert Counter(ids) == Counter(colour.colour_of.values())  # every file exactly once
    assert loader.num_skipped == 3


# 7. Every backend decodes a file to the same pixels ------------------------------------------------------

def _write_16bit_folder(root: Path) -> dict[str, np.ndarray]:
    """Solid 16-bit PNGs (grey, RGB) and 8-bit controls; the expected 8-bit pixel is v * 255 / 65535."""
    import cv2

    expected = {}
    (root / "grey").mkdir(parents=True)
    (root / "rgb").mkdir()
    for v in (300, 10000, 40000, 65535):
        path = root / "grey" / f"g{v:05d}.png"
        cv2.imwrite(str(path), np.full((16, 16), v, np.uint16))
        expected[str(path)] = np.full(3, v * 255 / 65535)
    for rgb in ((10000, 40000, 60000), (65535, 0, 30000)):
        path = root / "rgb" / f"c{rgb[0]:05d}.png"
        cv2.imwrite(str(path), np.broadcast_to(np.array(rgb[::-1], np.uint16), (16, 16, 3)).copy())  # BGR
        expected[str(path)] = np.array(rgb) * 255 / 65535
    path = root / "rgb" / "z8bit.png"
    Image.new("RGB", (16, 16), (1, 128, 254)).save(path)
    expected[str(path)] = np.array([1, 128, 254], np.float64)
    return expected


@pytest.mark.parametrize("backend", ["torch", "ffcv", "dali"])
def test_16bit_pngs_decode_to_the_same_pixels_in_every_backend(backend, tmp_path):
    pytest.importorskip("cv2")
    expected = _write_16bit_folder(tmp_path / "f")
    index = scan_image_folder(tmp_path / "f")
    source = tmp_path / "f"
    if backend == "ffcv":
        pytest.importorskip("ffcv")
        from mixkit.data import write_beton
        source = write_beton(source, tmp_path / "f.beton", num_workers=1, write_mode="raw").paths[0]
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    loader = create_loader(backend, source, batch_size=len(index), is_training=False, img_size=16,
                           crop_pct=1.0, device="cpu", num_workers=0 if backend == "torch" else 1)
    (images, labels), = list(loader)
    rgb = images.permute(0, 2, 3, 1).reshape(len(images), -1, 3) * torch_std() + torch_mean()
    assert float(rgb.std(dim=1).max()) < 0.5  # solid images stay solid: no resampling happened
    got = rgb.mean(dim=1).double().numpy()
    want = np.stack([expected[p] for p, _ in index.samples])  # evaluation order is the ImageFolder's
    assert labels.tolist() == [y for _, y in index.samples]
    assert np.abs(got - want).max() <= 1.01, f"{backend}: {np.round(got)} vs {np.round(want)}"


def _write_unusual_folder(root: Path) -> np.ndarray:
    """Unusual but valid files (EXIF-rotated JPEG and PNG, CMYK, palette with transparency, LA, RGBA,
    16-bit RGBA PNG, 16-bit TIFF); returns the quadrant picture they are made of, as stored."""
    import cv2

    q = np.zeros((16, 16, 3), np.uint8)
    q[:8, :8], q[:8, 8:], q[8:, :8], q[8:, 8:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    for c in ("exif", "other"):
        (root / c).mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: displayed after a 90-degree clockwise turn
    Image.fromarray(q).save(root / "exif" / "rot6.jpg", quality=100, exif=exif.tobytes())
    Image.fromarray(q).save(root / "exif" / "rot6.png", exif=exif.tobytes())
    Image.fromarray(q).convert("CMYK").save(root / "other" / "cmyk.jpg", quality=100)
    Image.fromarray(q).convert("P").save(root / "other" / "palette.png", transparency=0)
    Image.fromarray(q[..., 0]).convert("LA").save(root / "other" / "la.png")
    rgba = np.dstack([q, np.full((16, 16), 255, np.uint8)])
    rgba[:8, :8, 3] = 0
    Image.fromarray(rgba, "RGBA").save(root / "other" / "rgba.png")
    cv2.imwrite(str(root / "other" / "grey16.tiff"), np.full((16, 16), 40000, np.uint16))
    cv2.imwrite(str(root / "other" / "rgba16.png"),
                np.dstack([np.full((16, 16, 3), 40000, np.uint16), np.full((16, 16), 65535, np.uint16)]))
    return q


def test_unusual_files_decode_to_the_same_pixels_in_every_backend(tmp_path):
    """Every installed backend reads each file to the same pixels (EXIF orientation applied, as DALI
    does), and the EXIF-rotated files come out upright: the stored picture turned 90 degrees clockwise."""
    pytest.importorskip("cv2")
    stored = _write_unusual_folder(tmp_path / "f")
    index = scan_image_folder(tmp_path / "f")
    pixels = {}
    for backend in ("torch", "ffcv", "dali"):
        source = tmp_path / "f"
        if backend == "ffcv":
            if importlib.util.find_spec("ffcv") is None:
                continue
            from mixkit.data import write_beton
            source = write_beton(source, tmp_path / "f.beton", num_workers=1, write_mode="raw").paths[0]
        if backend == "dali" and importlib.util.find_spec("nvidia.dali") is None:
            continue
        loader = create_loader(backend, source, batch_size=len(index), is_training=False, img_size=16,
                               crop_pct=1.0, device="cpu", num_workers=0 if backend == "torch" else 1)
        (images, _), = list(loader)
        pixels[backend] = (images.permute(0, 2, 3, 1) * torch_std() + torch_mean()).round().numpy()
    names = [Path(p).relative_to(tmp_path / "f").as_posix() for p, _ in index.samples]
    for name in ("exif/rot6.jpg", "exif/rot6.png"):
        with Image.open(tmp_path / "f" / name) as img:  # PIL's own decode, the tag not applied
            as_stored = np.asarray(img.convert("RGB"), np.float32)
        assert np.abs(as_stored[2:-2:11, 2:-2:11] - stored[2:-2:11, 2:-2:11]).max() <= 3  # quadrant centres
        got = pixels["torch"][names.index(name)]
        assert np.abs(got - np.rot90(as_stored, k=-1)).max() <= 1, name  # turned clockwise
    for backend, got in pixels.items():
        for i, name in enumerate(names):
            assert np.abs(got[i] - pixels["torch"][i]).max() <= 1, f"{backend} vs torch on {name}"


def test_images_without_a_shared_8bit_reading_are_refused(tmp_path):
    colour = make_colour_folder(tmp_path / "f", (2,))
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(colour.root / "class_0" / "float.tiff")
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(colour.root / "class_0" / "int32.tiff")
    with pytest.raises(ValueError, match="2 bad file") as e:
        scan_image_folder(colour.root)
    assert str(e.value).count("unsupported pixel format") == 2


# 8. A training loader that would yield nothing is an error at construction --------------------------

@pytest.mark.parametrize("backend", ["torch", "ffcv", "dali", "dali-wds"])
def test_training_loader_that_yields_nothing_is_refused(backend, tmp_path):
    name = backend.split("-")[0]
    colour = make_colour_folder(tmp_path / "f", (3, 2))  # 5 samples
    source = colour.root
    if name == "ffcv":
        pytest.importorskip("ffcv")
        from mixkit.data import write_beton
        source = write_beton(colour.root, tmp_path / "f.beton", num_workers=1).paths[0]
    if name == "dali":
        pytest.importorskip("nvidia.dali")
    if backend == "dali-wds":
        from mixkit.data import write_webdataset
        source = tmp_path / "wds"
        write_webdataset(colour.root, source, shard_size=2)
    kw = dict(img_size=8, device="cpu", num_workers=1 if name != "torch" else 0)
    for batch_size, world_size, shard in ((8, 1, 5), (3, 2, 2)):
        for rank in range(world_size):
            with pytest.raises(ValueError, match=rf"holds {shard} of \d+ samples, fewer than "
                                                 rf"batch_size={batch_size}.*drop_last=False"):
                create_loader(name, source, batch_size=batch_size, is_training=True, rank=rank,
                              world_size=world_size, **kw)
    with pytest.raises(ValueError, match="has no training sample"):
        create_loader(name, source, batch_size=1, is_training=True, rank=5, world_size=6, **kw)
    loader = create_loader(name, source, batch_size=8, is_training=True, drop_last=False, **kw)
    assert len(loader) == 1 and sum(len(y) for _, y in loader) == 5
    evaluation = create_loader(name, source, batch_size=8, is_training=False, **kw)  # keeps its partial batch
    assert sum(len(y) for _, y in evaluation) == 5


# 16. Launcher variables that are not numbers are named ------------------------------------------------

@pytest.mark.parametrize("name,value", [("RANK", "abc"), ("WORLD_SIZE", "two"), ("RANK", "-1"),
                                        ("WORLD_SIZE", "1.5")])
def test_bad_launcher_variables_are_named(name, value, tmp_path, monkeypatch):
    colour = make_colour_folder(tmp_path / "f", (1,))
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"environment variable {name}=.*not a non-negative integer"):
        create_loader("torch", colour.root, batch_size=1, is_training=False, device="cpu")


def test_local_rank_is_parsed_and_named(monkeypatch):
    from mixkit.data.sharding import env_int

    monkeypatch.setenv("LOCAL_RANK", "gpu0")
    with pytest.raises(ValueError, match="LOCAL_RANK='gpu0'"):
        env_int("LOCAL_RANK", None)
    monkeypatch.setenv("LOCAL_RANK", " 3 ")
    assert env_int("LOCAL_RANK", None) == 3
    monkeypatch.delenv("LOCAL_RANK")
    assert env_int("LOCAL_RANK", None) is None
