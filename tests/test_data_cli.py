"""The ``mixkit`` CLI's convert sub-command, sharding helpers and the offline photo ImageFolder."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from data_fixtures import make_colour_folder
from data_photos import build_photo_folder
from PIL import Image

from mixkit.cli import SUBCOMMANDS, build_parser, main
from mixkit.data import resolve_rank, scan_image_folder, shard_indices
from mixkit.data.sharding import ShardSampler

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_help_explains_every_flag(capsys):
    assert "convert" in SUBCOMMANDS
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["convert"]
    for action in sub._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    for flag in ("--max-resolution", "--jpeg-quality", "--compress-probability", "--write-mode",
                 "--format", "--skip-corrupt", "--shard-size", "--num-workers", "--chunk-size"):
        assert flag in text


def test_convert_beton(tmp_path, capsys):
    pytest.importorskip("ffcv")
    from ffcv.reader import Reader

    colour = make_colour_folder(tmp_path / "f", (3, 2))
    out = tmp_path / "out.beton"
    assert main(["convert", str(colour.root), str(out), "--num-workers", "1", "--max-resolution", "32",
                 "--jpeg-quality", "80", "--compress-probability", "1.0"]) == 0
    assert "wrote 5 samples of 2 classes" in capsys.readouterr().out
    reader = Reader(str(out))  # metadata columns are f0 (image), f1 (label)
    assert reader.num_samples == 5 and list(reader.handlers) == ["image", "label"]
    assert reader.metadata["f1"].tolist() == [0, 0, 0, 1, 1]
    assert max(reader.metadata["f0"]["width"].max(), reader.metadata["f0"]["height"].max()) <= 32  # resized to max resolution 32
    meta = json.loads((tmp_path / "out.beton.json").read_text())
    assert meta["classes"] == colour.classes and meta["skipped"] == []


def test_convert_rejects_bad_options(tmp_path, capsys):
    colour = make_colour_folder(tmp_path / "f", (1,))
    assert main(["convert", str(colour.root), str(tmp_path / "o.beton"), "--jpeg-quality", "0"]) == 2
    assert "jpeg_quality" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "o.beton")]) == 2


def test_convert_wds(tmp_path):
    colour = make_colour_folder(tmp_path / "f", (3, 4))
    assert main(["convert", str(colour.root), str(tmp_path / "w"), "--format", "wds", "--shard-size", "3"]) == 0
    tars = sorted((tmp_path / "w").glob("*.tar"))
    assert len(tars) == 3
    labels = {}
    for t in tars:
        with tarfile.open(t) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            key, ext = name.split(".", 1)
            if ext == "jpg":
                img = np.asarray(Image.open(io.BytesIO(data)))
                labels[key] = (img, int(members[f"{key}.cls"]),
                               int(np.frombuffer(members[f"{key}.label"], "<i8")[0]))
    assert len(labels) == 7
    assert all(cls == lab for _, cls, lab in labels.values())
    assert sorted(lab for _, _, lab in labels.values()) == [0, 0, 0, 1, 1, 1, 1]


def test_shard_indices_partition():
    for n, w in [(23, 2), (10, 3), (7, 7), (5, 1)]:
        evals = [shard_indices(n, rank=r, world_size=w) for r in range(w)]
        assert sorted(np.concatenate(evals).tolist()) == list(range(n))  # each once, no padding
        trains = [shard_indices(n, rank=r, world_size=w, seed=4, equal_size=True) for r in range(w)]
        flat = np.concatenate(trains)
        assert len(set(flat.tolist())) == len(flat) == w * (n // w)
        assert len({len(t) for t in trains}) == 1


def test_shard_sampler_reshuffles():
    sampler = ShardSampler(np.arange(20), shuffle=True, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(list(sampler)) == sorted(first) and list(sampler) != first
    assert list(ShardSampler(np.arange(5), shuffle=False)) == [0, 1, 2, 3, 4]


def test_resolve_rank(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank() == (3, 4)
    assert resolve_rank(1, 2) == (1, 2)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert resolve_rank() == (0, 1)
    with pytest.raises(ValueError, match="global rank"):
        resolve_rank(-1, 2)


def test_photo_folder_is_real_jpegs(tmp_path):
    root = build_photo_folder(tmp_path, num_files=20, min_size=60, max_size=90, seed=1)
    index = scan_image_folder(root)
    assert len(index) == 20 and len(index.classes) == 10
    for path, _ in index.samples[:5]:
        with Image.open(path) as img:
            assert img.format == "JPEG" and 60 <= min(img.size) and max(img.size) <= 90
            assert np.asarray(img).std() > 5  # a photo, not a flat fill
