"""ImageFolder checking before the first batch (issue 20): --validate none|header|full, each mode finding what
it promises, and the full verdicts cached by path, size and mtime so that a later start decodes only new or
changed files, safely under several processes at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import make_colour_folder, write_corrupt_jpeg, write_truncated_jpeg
from PIL import Image

from mixkit.data import create_loader, imagefolder, scan_image_folder
from mixkit.data.beton import ffcv_size_problem
from mixkit.data.verdicts import VerdictCache, cache_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    return make_colour_folder(tmp_path / "f", (3, 3))


def _bad(root, validate, **kw) -> dict[str, str]:
    """{file name: reason} of the bad files a scan finds."""
    with pytest.warns(imagefolder.BadSampleWarning):
        index = scan_image_folder(root, validate=validate, skip_corrupt=True, **kw)
    return {Path(p).name: reason for p, reason in index.skipped}


def test_each_mode_finds_what_it_promises(folder):
    c0 = folder.root / "class_0"
    write_truncated_jpeg(c0 / "truncated.jpg")
    write_corrupt_jpeg(c0 / "noise.jpg")
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(c0 / "float.tiff")
    (c0 / "notes.txt").write_text("not an image")
    assert set(_bad(folder.root, "full")) == {"truncated.jpg", "noise.jpg", "float.tiff", "notes.txt"}
    # The header is readable in a truncated JPEG: only a full decode finds it.
    assert set(_bad(folder.root, "header")) == {"noise.jpg", "float.tiff", "notes.txt"}
    assert set(_bad(folder.root, "none")) == {"notes.txt"}
    assert set(_bad(folder.root, True)) == set(_bad(folder.root, "full"))  # the former switch
    assert set(_bad(folder.root, False)) == {"notes.txt"}
    with pytest.raises(ValueError, match="choose one of none, header, full"):
        scan_image_folder(folder.root, validate="fast")


def test_header_mode_applies_a_backends_size_test(folder):
    Image.new("RGB", (1, 1)).save(folder.root / "class_1" / "dot.png")
    bad = _bad(folder.root, "header", check_size=ffcv_size_problem)
    assert set(bad) == {"dot.png"} and "too small for ffcv" in bad["dot.png"]


def test_full_verdicts_are_cached_by_path_size_and_mtime(folder, monkeypatch):
    write_truncated_jpeg(folder.root / "class_0" / "truncated.jpg")
    decoded = []
    real = imagefolder._read_verdict
    monkeypatch.setattr(imagefolder, "_read_verdict", lambda p, full: decoded.append(Path(p).name) or real(p, full))
    first = _bad(folder.root, "full")
    assert len(decoded) == 7 and set(first) == {"truncated.jpg"}
    decoded.clear()
    assert _bad(folder.root, "full") == first and decoded == []  # nothing decoded again, bad file still reported
    # A changed file (new mtime) is decoded again, and only it.
    changed = Path(folder.files[0])
    Image.new("RGB", (9, 9)).save(changed, format="JPEG")
    os.utime(changed, ns=(1, 1))
    _bad(folder.root, "full")
    assert decoded == [changed.name]
    # The cached size serves a backend's size test without decoding.
    decoded.clear()
    with pytest.warns(imagefolder.BadSampleWarning):
        index = scan_image_folder(folder.root, skip_corrupt=True,
                                  check_size=lambda w, h: "too small" if min(w, h) < 10 else None)
    assert decoded == [] and {Path(p).name for p, _ in index.skipped} == {"truncated.jpg", changed.name}
    # Without the cache every file is decoded.
    scan_image_folder(folder.root, skip_corrupt=True, cache=False)
    assert len(decoded) == 7


def test_cache_file_is_one_json_per_root(folder):
    scan_image_folder(folder.root)
    cache = VerdictCache(folder.root)
    assert cache.path.parent == cache_dir() and cache.path.is_file()
    data = json.loads(cache.path.read_text())
    assert data["root"] == os.path.realpath(folder.root) and len(data["files"]) == 6
    size, mtime_ns, reason, width, height = data["files"][os.path.relpath(folder.files[0], folder.root)]
    st = os.stat(folder.files[0])
    assert (size, mtime_ns, reason, width, height) == (st.st_size, st.st_mtime_ns, None, 56, 40)


def test_unreadable_or_unwritable_cache_is_not_an_error(folder, tmp_path, monkeypatch):
    scan_image_folder(folder.root)
    VerdictCache(folder.root).path.write_text("{not json")
    assert len(scan_image_folder(folder.root)) == 6  # ignored, and rewritten
    assert json.loads(VerdictCache(folder.root).path.read_text())["files"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MIXKIT_VALIDATE_CACHE", str(blocker / "cache"))  # under a file: cannot be created
    with pytest.warns(UserWarning, match="could not write the validation cache"):
        assert len(scan_image_folder(folder.root)) == 6


@pytest.mark.slow
def test_several_processes_validating_one_folder_at_once(tmp_path):
    """Four processes start on a folder with no cache at the same time: every one succeeds, the cache that
    remains is complete JSON, and a fifth start decodes nothing."""
    root = make_colour_folder(tmp_path / "f", (40, 40), size=(16, 16)).root
    code = textwrap.dedent(f"""
        from mixkit.data import scan_image_folder
        print(len(scan_image_folder({str(root)!r}, num_threads=1)))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == ["80"] * 4 and all(p.returncode == 0 for p in procs)
    cache = VerdictCache(root)
    assert len(cache._entries) == 80
    assert not [p for p in cache.path.parent.iterdir() if p.name.startswith(".")]  # no temporaries left
    assert all(cache.get(str(p)) == (None, 16, 16) for p in root.glob("*/*.jpg"))


def test_loaders_and_command_lines_take_the_mode(folder):
    write_truncated_jpeg(folder.root / "class_0" / "truncated.jpg")
    kw = dict(batch_size=2, is_training=False, img_size=16, device="cpu", num_workers=0)
    with pytest.raises(ValueError, match="1 bad file"):
        create_loader("torch", folder.root, validate="full", **kw)
    assert create_loader("torch", folder.root, validate="header", **kw).shard_size == 7  # not found by the header
    from mixkit.eval.cli import build_parser as eval_parser
    from mixkit.train import parse_args

    assert parse_args([]).validate == "full" and parse_args(["--validate", "header"]).validate == "header"
    assert eval_parser().parse_args(["--validate", "none"]).validate == "none"
    with pytest.raises(SystemExit):
        parse_args(["--validate", "fast"])
