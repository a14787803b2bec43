"""Bad input for every backend: a clear error, or a documented skip that is counted and reported."""
from __future__ import annotations

import copy
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from data_fixtures import make_colour_folder, run_epoch, write_corrupt_jpeg, write_truncated_jpeg

from mixkit.data import BadSampleWarning, create_loader, scan_image_folder

# numba's finaliser raises a harmless KeyError at garbage collection after ffcv's compiled pipelines.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    """A colour folder plus a truncated JPEG, a corrupt JPEG and a non-image file."""
    colour = make_colour_folder(tmp_path_factory.mktemp("bad"), (4, 4))
    bad = [colour.root / "class_0" / "truncated.jpg", colour.root / "class_1" / "corrupt.jpg",
           colour.root / "class_1" / "notes.txt"]
    write_truncated_jpeg(bad[0])
    write_corrupt_jpeg(bad[1])
    bad[2].write_text("not an image")
    return colour, [str(p) for p in bad]


def test_scan_lists_every_bad_file(bad_folder):
    colour, bad = bad_folder
    with pytest.raises(ValueError, match="3 bad file") as e:
        scan_image_folder(colour.root)
    msg = str(e.value)
    assert all(p in msg for p in bad)
    assert "truncated" in msg and "not an image file" in msg and "skip_corrupt=True" in msg


def test_scan_skip_counts_and_warns(bad_folder):
    colour, bad = bad_folder
    with pytest.warns(BadSampleWarning, match="skipped 3 bad file"):
        index = scan_image_folder(colour.root, skip_corrupt=True)
    assert sorted(p for p, _ in index.skipped) == sorted(bad)
    assert [p for p, _ in index.samples] == colour.files  # every good file, none dropped


def test_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        scan_image_folder(tmp_path / "file")
    (tmp_path / "root").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        scan_image_folder(tmp_path / "root")
    colour = make_colour_folder(tmp_path / "withempty", (2,))
    (colour.root / "zz_empty").mkdir()
    with pytest.raises(ValueError, match=r"empty class folders \['zz_empty'\]"):
        scan_image_folder(colour.root, skip_corrupt=True)  # never skipped: it would shift nothing visibly


def test_class_of_only_bad_files(tmp_path):
    colour = make_colour_folder(tmp_path / "f", (2,))
    (colour.root / "class_9").mkdir()
    write_corrupt_jpeg(colour.root / "class_9" / "x.jpg")
    with pytest.warns(BadSampleWarning), pytest.raises(ValueError, match="hold only bad files"):
        scan_image_folder(colour.root, skip_corrupt=True)


def test_hidden_files_are_ignored(tmp_path):
    colour = make_colour_folder(tmp_path / "f", (2, 2))
    (colour.root / ".DS_Store").write_text("x")
    (colour.root / ".ipynb_checkpoints").mkdir()
    (colour.root / "class_0" / ".hidden.jpg").write_text("x")
    index = scan_image_folder(colour.root)
    assert index.classes == colour.classes and [p for p, _ in index.samples] == colour.files


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_imagefolder_backends(backend, bad_folder, tmp_path):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    colour, bad = bad_folder
    kw = dict(batch_size=3, is_training=False, img_size=32, device="cpu", num_workers=1)
    with pytest.raises(ValueError, match="3 bad file"):
        create_loader(backend, colour.root, **kw)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_loader(backend, tmp_path / "missing", **kw)
    with pytest.warns(BadSampleWarning):
        loader = create_loader(backend, colour.root, skip_corrupt=True, **kw)
    assert loader.num_skipped == 3 and sorted(p for p, _ in loader.skipped) == sorted(bad)
    ids, labels, _ = run_epoch(loader)
    assert Counter(ids) == Counter(colour.colour_of.values())  # exactly the good files, once each
    assert labels == [colour.class_of_colour[i] for i in ids]


def test_dali_missing_tar(tmp_path):
    pytest.importorskip("nvidia.dali")
    with pytest.raises(FileNotFoundError, match="mixkit convert"):
        create_loader("dali", [tmp_path / "a.tar"], batch_size=2, is_training=False, device="cpu")


def test_ffcv_bad_input(bad_folder, tmp_path):
    pytest.importorskip("ffcv")
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from mixkit.data import write_beton

    colour, bad = bad_folder
    kw = dict(batch_size=3, is_training=False, img_size=32, device="cpu", num_workers=1)
    with pytest.raises(ValueError, match="3 bad file"):
        write_beton(colour.root, tmp_path / "x.beton", num_workers=1)
    with pytest.warns(BadSampleWarning):
        write_beton(colour.root, tmp_path / "ok.beton", num_workers=1, skip_corrupt=True, write_mode="jpg",
                    jpeg_quality=95)
    loader = create_loader("ffcv", tmp_path / "ok.beton", **kw)
    assert loader.num_skipped == 3 and loader.classes == colour.classes  # from the sidecar
    ids, labels, _ = run_epoch(loader)
    assert Counter(ids) == Counter(colour.colour_of.values())
    assert labels == [colour.class_of_colour[i] for i in ids]

    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_loader("ffcv", tmp_path / "missing.beton", **kw)
    with pytest.raises(FileNotFoundError, match="mixkit convert"):
        create_loader("ffcv", colour.root, **kw)  # an ImageFolder, not a .beton
    (tmp_path / "junk.beton").write_bytes(np.random.default_rng(0).integers(0, 255, 4096, np.uint8).tobytes())
    with pytest.raises(ValueError, match="not a readable FFCV .beton"):
        create_loader("ffcv", tmp_path / "junk.beton", **kw)

    class Pairs:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return np.zeros((8, 8, 3), np.uint8), i

    other = tmp_path / "other.beton"
    DatasetWriter(str(other), {"img": RGBImageField(), "target": IntField()}, num_workers=1) \
        .from_indexed_dataset(Pairs())
    with pytest.raises(ValueError, match="has fields .*'img'.*needs"):
        create_loader("ffcv", other, **kw)


def test_unknown_backend_and_options(bad_folder):
    colour, _ = bad_folder
    with pytest.raises(ValueError, match="unknown loader backend 'nope'"):
        create_loader("nope", colour.root, batch_size=2, is_training=False)
    with pytest.raises(ValueError, match="rank 2 and world_size 2"):
        create_loader("torch", colour.root, batch_size=2, is_training=False, rank=2, world_size=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_loader("torch", colour.root, batch_size=2, is_training=False, device="cuda")


def test_convert_cli_bad_input(bad_folder, tmp_path, capsys):
    pytest.importorskip("ffcv")
    from mixkit.cli import main

    colour, bad = bad_folder
    assert main(["convert", str(colour.root), str(tmp_path / "a.beton"), "--num-workers", "1"]) == 2
    assert "truncated.jpg" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(colour.root, copy)
    with pytest.warns(BadSampleWarning):
        assert main(["convert", str(copy), str(tmp_path / "b.beton"), "--num-workers", "1",
                     "--skip-corrupt"]) == 0
    out = capsys.readouterr().out
    assert "wrote 8 samples of 2 classes" in out and "skipped 3 bad file" in out



def test_missing_backend_package_is_named(bad_folder, monkeypatch):
    from mixkit.data import factory, register_backend

    monkeypatch.setattr(factory, "_BACKENDS", copy.deepcopy(factory._BACKENDS))  # restored afterwards
    register_backend("fake", "mixkit_no_such_module:Loader")
    with pytest.raises(ImportError, match="loader backend 'fake' needs a package that is missing"):
        create_loader("fake", bad_folder[0].root, batch_size=2, is_training=False)


def test_import_does_not_load_optional_backends():
    import subprocess
    import sys

    code = "import sys, mixkit, mixkit.data; assert 'ffcv' not in sys.modules and 'nvidia.dali' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
