"""Evaluation labels by class name (issue 20): a split that lacks a training class keeps the training labels, in
every loader backend, mixkit-train's evaluation and mixkit-eval; a class only the evaluation split has is an error
naming it and the split. The reference is a model that is right on every class by construction (nearest class
colour): with the training labels it scores 100%, and with the split's own sorted labels it would not."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from timm.models import register_model
from torch import nn

from mixkit.data import create_loader
from mixkit.rundir import save_model_safetensors

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CLASSES = ["apple", "berry", "cherry", "date"]
RGB = {"apple": (220, 30, 30), "berry": (30, 200, 40), "cherry": (40, 40, 220), "date": (230, 220, 40),
       "elder": (120, 20, 160)}
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
MODEL = "mixkit_test_nearest_colour"


class NearestColour(nn.Module):
    """Logits -|z - z_k|^2 (up to a constant) of the mean normalised colour z against each class colour z_k:
    right on every solid-colour image of ``CLASSES`` by construction."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        z = (torch.tensor([RGB[c] for c in CLASSES], dtype=torch.float32) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
        self.num_classes = num_classes
        self.head = nn.Linear(3, num_classes)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.fill_(-1e4)  # classes beyond CLASSES never win
            self.head.weight[:len(CLASSES)] = 2 * z[:num_classes]
            self.head.bias[:len(CLASSES)] = -(z[:num_classes] ** 2).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))


if not timm.is_model(MODEL):
    @register_model
    def mixkit_test_nearest_colour(pretrained: bool = False, num_classes: int = len(CLASSES), **kwargs) -> nn.Module:
        return NearestColour(num_classes)


def make_split(root: Path, classes: list[str], per_class: int = 3, size: int = 24) -> Path:
    """``root/<class>/<i>.png``: solid images of each class's colour."""
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size, 3), RGB[name], np.uint8)).save(root / name / f"{i}.png")
    return root


def true_label(images: torch.Tensor, mean=MEAN, std=STD) -> list[int]:
    """The training label of each image, from its colour (independent of the loader's labels)."""
    rgb = (images.mean(dim=(2, 3)) * torch.tensor(std) + torch.tensor(mean)) * 255
    names = list(RGB)
    d = torch.cdist(rgb.double(), torch.tensor([RGB[n] for n in names], dtype=torch.float64))
    return [CLASSES.index(names[i]) if names[i] in CLASSES else -1 for i in d.argmin(1).tolist()]


def source(backend: str, folder: Path, tmp: Path) -> Path:
    if backend == "ffcv":
        pytest.importorskip("ffcv")
        from mixkit.data import write_beton

        return write_beton(folder, tmp / f"{folder.name}.beton", num_workers=1, write_mode="raw").paths[0]
    pytest.importorskip("nvidia.dali")
    if backend == "dali-wds":
        from mixkit.data import write_webdataset

        write_webdataset(folder, tmp / f"{folder.name}-wds", shard_size=4)
        return tmp / f"{folder.name}-wds"
    return folder


BACKENDS = ["torch", "ffcv", "dali", "dali-wds"]


def loader(backend: str, src: Path, **kw):
    return create_loader(backend.split("-")[0], src, batch_size=4, is_training=False, img_size=16, device="cpu",
                         num_workers=0 if backend == "torch" else 1, mean=MEAN, std=STD, **kw)


@pytest.mark.parametrize("backend", ["torch", "dali", "dali-wds", pytest.param("ffcv", marks=pytest.mark.slow)])
def test_every_backend_labels_a_split_by_class_name(backend, tmp_path):
    src = source(backend, make_split(tmp_path / "val", ["apple", "cherry", "date"]), tmp_path)
    by_name = loader(backend, src, class_map=CLASSES)
    assert by_name.classes == CLASSES
    labels, truth = [], []
    for x, y in by_name:
        labels += y.tolist()
        truth += true_label(x)
    assert sorted(set(truth)) == [0, 2, 3] and labels == truth
    # Without the map the split numbers its own three classes 0, 1, 2: cherry and date shifted.
    own = [y for _, ys in loader(backend, src) for y in ys.tolist()]
    assert sorted(set(own)) == [0, 1, 2]

    extra = source(backend, make_split(tmp_path / "val2", ["apple", "elder"]), tmp_path)
    with pytest.raises(ValueError, match=r"'elder'.*not among the 4 classes") as e:
        loader(backend, extra, class_map=CLASSES)
    assert "val2" in str(e.value)  # the split is named


def test_class_map_forms_and_errors():
    from mixkit.data import LoaderConfig

    assert LoaderConfig(batch_size=1, is_training=False, class_map={"b": 1, "a": 0}).class_map == ("a", "b")
    for bad, err in (({"a": 0, "b": 2}, ValueError), (["a", "a"], ValueError), ("ab", TypeError), ([], ValueError)):
        with pytest.raises(err):
            LoaderConfig(batch_size=1, is_training=False, class_map=bad)


def test_memory_backend_maps_too():
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    got = create_loader("memory", (images, torch.tensor([0, 1, 1])), batch_size=3, is_training=False, img_size=4,
                        device="cpu", mean=(0.0,), std=(1.0,), classes=["b", "c"], class_map=["a", "b", "c"])
    assert next(iter(got))[1].tolist() == [1, 2, 2]


# mixkit-train ---------------------------------------------------------------------------------------------

def _train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(data), "--val-split", "val", "--model", MODEL, "--img-size", "16", "--epochs", "1",
            "-b", "4", "--workers", "0", "--lr", "0", "--weight-decay", "0", "--sched", "step", "--warmup-epochs",
            "0", "--mean", *map(str, MEAN), "--std", *map(str, STD), "--output", str(out), "--experiment", "run",
            "--no-progress", *extra]


def test_mixkit_train_scores_a_split_missing_a_class_by_name(tmp_path):
    from train_fixtures import train_in_process

    data = tmp_path / "data"
    make_split(data / "train", CLASSES, per_class=2)
    make_split(data / "val", ["apple", "cherry", "date"])
    summary = train_in_process(_train_argv(data, tmp_path))
    assert summary["final"]["eval_top1"] == pytest.approx(100.0)
    assert summary["eval_samples"] == 9
    saved = yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())
    assert saved["classes"] == CLASSES and saved["num_classes"] == 4

    make_split(data / "val", ["elder"], per_class=1)
    with pytest.raises(ValueError, match=r"'elder'.*not among") as e:
        train_in_process(_train_argv(data, tmp_path, "--experiment", "run2"))
    assert str(data / "val") in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ffcv", "dali-wds"])
def test_mixkit_train_reads_the_classes_of_converted_data(backend, tmp_path):
    """--loader ffcv and dali on webdataset shards need no --num-classes: the sidecar / index lists the
    classes (issue 20); the split missing one is still labelled by name."""
    from train_fixtures import train_in_process

    data = tmp_path / "data"
    data.mkdir()
    for split, classes in (("train", CLASSES), ("val", ["apple", "date"])):
        src = source(backend, make_split(tmp_path / "images" / split, classes, per_class=2), tmp_path)
        shutil.move(str(src), str(data / (f"{split}.beton" if backend == "ffcv" else split)))
        if backend == "ffcv":
            shutil.move(str(src) + ".json", str(data / f"{split}.beton.json"))
    summary = train_in_process(_train_argv(data, tmp_path, "--loader", backend.split("-")[0]))
    saved = yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())
    assert saved["num_classes"] == 4 and saved["classes"] == CLASSES
    assert summary["final"]["eval_top1"] == pytest.approx(100.0) and summary["eval_samples"] == 4


# mixkit-eval ----------------------------------------------------------------------------------------------

def fabricate_run(run: Path, data_dir: Path, **extra) -> Path:
    """A run directory as mixkit-train writes it, with the right-on-every-class model."""
    run.mkdir(parents=True)
    args = {"model": MODEL, "model_kwargs": {}, "num_classes": 4, "in_chans": 3, "img_size": 16, "mean": list(MEAN),
            "std": list(STD), "crop_pct": 0.875, "dataset": "", "data_dir": str(data_dir), "val_split": "val",
            "classes": CLASSES, "loader": "torch", **extra}
    (run / "args.yaml").write_text(yaml.safe_dump(args))
    save_model_safetensors(NearestColour(), run / "model.safetensors")
    return run


def _eval(run: Path, *extra: str) -> int:
    from mixkit.eval.cli import main

    return main([str(run), "--no-attacks", "--no-progress", "--workers", "0", *extra])


def test_mixkit_eval_scores_a_split_missing_a_class_by_name(tmp_path, capsys):
    data = tmp_path / "data"
    make_split(data / "val", ["apple", "cherry", "date"])
    run = fabricate_run(tmp_path / "run", data)
    assert _eval(run) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["metrics"]["top1"] == pytest.approx(100.0) and report["metrics"]["num_samples"] == 9

    make_split(data / "val", ["elder"], per_class=1)
    assert _eval(run) == 2
    err = capsys.readouterr().err
    assert "'elder'" in err and str(data / "val") in err and "Traceback" not in err


def test_mixkit_eval_of_an_old_run_reads_the_classes_of_its_training_split(tmp_path):
    # args.yaml of a run written before classes were recorded: the run's own training split names them.
    data = tmp_path / "data"
    make_split(data / "train", CLASSES, per_class=1)
    make_split(data / "val", ["apple", "date"])
    run = fabricate_run(tmp_path / "run", data)
    args = yaml.safe_load((run / "args.yaml").read_text())
    del args["classes"]
    (run / "args.yaml").write_text(yaml.safe_dump(args))
    assert _eval(run) == 0
    assert json.loads((run / "eval.json").read_text())["metrics"]["top1"] == pytest.approx(100.0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ffcv", "dali-wds"])
def test_mixkit_eval_reads_the_runs_own_converted_split(backend, tmp_path):
    """An ffcv run's data directory holds <split>.beton files, a webdataset one <split>/ shard folders:
    mixkit-eval reads them without --data-dir (issue 20), labelled by name."""
    images = make_split(tmp_path / "images" / "val", ["apple", "cherry", "date"])
    data = tmp_path / "data"
    data.mkdir()
    src = source(backend, images, tmp_path)
    shutil.move(str(src), str(data / ("val.beton" if backend == "ffcv" else "val")))
    if backend == "ffcv":
        shutil.move(str(src) + ".json", str(data / "val.beton.json"))
    run = fabricate_run(tmp_path / "run", data, loader=backend.split("-")[0])
    assert _eval(run) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["metrics"]["top1"] == pytest.approx(100.0) and report["metrics"]["num_samples"] == 9
    assert ("beton" if backend == "ffcv" else "webdataset") in report["data"]


def test_mixkit_eval_says_what_data_to_pass(tmp_path, capsys):
    data = tmp_path / "empty"
    data.mkdir()
    run = fabricate_run(tmp_path / "run", data)
    assert _eval(run) == 2
    err = capsys.readouterr().err
    assert "val.beton" in err and "--data-dir" in err and "mixkit convert" in err


def test_mixkit_eval_names_the_model_and_the_weights_that_do_not_fit(tmp_path, capsys):
    data = make_split(tmp_path / "data" / "val", ["apple"]).parent
    run = fabricate_run(tmp_path / "run", data)
    save_model_safetensors(NearestColour(num_classes=2), run / "model.safetensors")  # another head
    assert _eval(run) == 2
    err = capsys.readouterr().err
    assert MODEL in err and str(run / "model.safetensors") in err and "Traceback" not in err
    assert "head.weight" in err  # which tensors differ
    (run / "model.safetensors").write_bytes(b"not safetensors")
    assert _eval(run) == 2
    assert str(run / "model.safetensors") in capsys.readouterr().err
