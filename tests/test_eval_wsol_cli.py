"""mixkit-eval --localization end to end (fabricated runs and a tiny trained one), and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_fixtures import make_cub, make_run
from PIL import Image

from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT
from mixkit.eval.cli import main

needs_fmnist = pytest.mark.skipif(not (DEFAULT_FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Debian's dataset-fashion-mnist is not installed")
QUICK = ["--no-attacks", "--no-progress", "--device", "cpu", "--workers", "0", "--cam-interval", "0.1"]


def _check_report(loc: dict, num_test: int, num_heldout: int) -> None:
    assert (loc["num_test"], loc["num_heldout"]) == (num_test, num_heldout)
    assert len(loc["cam_thresholds"]) == len(loc["gt_known_per_threshold"]) == len(loc["top1_loc_per_threshold"]) == 10
    assert loc["max_box_acc"] == max(loc["gt_known_per_threshold"])
    assert loc["chosen_threshold"] in loc["cam_thresholds"]
    assert all(t <= g for t, g in zip(loc["top1_loc_per_threshold"], loc["gt_known_per_threshold"], strict=True))
    with Image.open(loc["figure"]) as img:
        assert img.format == "PNG"


def test_cub_run(tmp_path: Path, capsys):
    # Every second test image has a box covering the whole image: at threshold 0 the CAM's box is the whole
    # image, so exactly those are localized there (the small rectangles cover under a third of the crop),
    # whatever the (random) weights.
    cub = make_cub(tmp_path / "CUB_200_2011", test_per_class=4, full_box_every=2)
    run = make_run(tmp_path / "run", dataset="cub", data_dir=str(cub), in_chans=3, img_size=32, num_classes=2)
    assert main([str(run), "--localization", "cub", "--loc-holdout", "0", *QUICK]) == 0
    report = json.loads((run / "eval.json").read_text())
    loc = report["localization"]
    _check_report(loc, 8, 0)
    assert loc["gt_known_per_threshold"][0] == 50.0 and loc["threshold_chosen_on"].startswith("test")
    # The classification pass (the 'torch' loader) and the localization pass (its own reader) saw the same images.
    assert report["metrics"]["num_samples"] == 8 and loc["top1"] == pytest.approx(report["metrics"]["top1"])
    assert Path(loc["figure"]) == run / "localization.png"
    assert "MaxBoxAcc" in capsys.readouterr().out
    # Held out: the first image of each class chooses the threshold.
    out = tmp_path / "e.json"
    assert main([str(run), "--localization", "cub", "--data-dir", str(cub), "--loc-holdout", "1", "--output", str(out),
                 *QUICK]) == 0
    loc = json.loads(out.read_text())["localization"]
    _check_report(loc, 6, 2)
    assert loc["threshold_chosen_on"] == "held-out" and Path(loc["figure"]).name == "localization_e.png"


def _imagenet(root: Path, *, size_factor: int = 1) -> tuple[Path, Path]:
    import numpy as np

    rng = np.random.default_rng(0)
    boxes = root / "boxes"
    boxes.mkdir(parents=True)
    for k, synset in enumerate(("n01440764", "n01443537")):
        (root / "val" / synset).mkdir(parents=True)
        for i in range(3):
            w, h = 40 + 4 * i, 30 + 2 * k
            Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8)).save(
                root / "val" / synset / f"ILSVRC2012_val_{k}{i}.png")
            x0, y0, x1, y1 = (1, 1, w, h) if i == 0 else (3, 4, 12, 11)  # 1-based inclusive
            f = size_factor
            # Scaled by f in continuous coordinates: [x0 - 1, x1) becomes [(x0 - 1) f, x1 f).
            objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{(x0 - 1) * f + 1}</xmin><ymin>{(y0 - 1) * f + 1}</ymin><xmax>"
                           f"{x1 * f}</xmax><ymax>{y1 * f}</ymax></bndbox></object>" for n in (synset, "n09999999"))
            (boxes / f"ILSVRC2012_val_{k}{i}.xml").write_text(
                f"<annotation><size><width>{w * f}</width><height>{h * f}</height></size>{objs}</annotation>")
    return root, boxes


@pytest.mark.parametrize("size_factor", [1, 2])
def test_imagenet_voc_boxes(tmp_path: Path, size_factor: int):
    # size_factor 2: the XML files describe images twice as large (a resized copy): boxes are rescaled.
    data, boxes = _imagenet(tmp_path / "imagenet", size_factor=size_factor)
    run = make_run(tmp_path / "run", dataset=None, data_dir=str(data), in_chans=3, img_size=32, num_classes=2)
    assert main([str(run), "--localization", "imagenet", "--boxes-dir", str(boxes), "--loc-holdout", "0",
                 "--split", "val", *QUICK]) == 0
    loc = json.loads((run / "eval.json").read_text())["localization"]
    _check_report(loc, 6, 0)
    # The first image of each class has a whole-image box (and another object, of another class, is ignored).
    assert loc["gt_known_per_threshold"][0] == pytest.approx(100 / 3)
    # By hand, the second image (44 x 30, VOC box 3..12 x 4..11, i.e. [2, 12) x [3, 11)) at 32 px, crop 0.875:
    # the shorter side goes to 36 (x 1.2), the longer to int(36 * 44 / 30) = 52 (x 52 / 44); crop at (10, 2).
    from mixkit.eval.locdata import imagenet_localization

    ds = imagenet_localization(data / "val", boxes, img_size=32, workers=0).batches.dataset
    _, label, box = ds[1]
    assert label == 0
    assert box.tolist() == [pytest.approx([0.0, 1.6, 12 * 52 / 44 - 10, 11.2], abs=1e-5)]


def test_imagenet_bad_boxes(tmp_path: Path, capsys):
    data, boxes = _imagenet(tmp_path / "imagenet")
    run = make_run(tmp_path / "run", dataset=None, data_dir=str(data), in_chans=3, img_size=32, num_classes=2)
    base = [str(run), "--localization", "imagenet", "--split", "val", *QUICK]
    assert main(base) == 2
    assert "needs --boxes-dir" in capsys.readouterr().err
    (boxes / "ILSVRC2012_val_01.xml").unlink()
    assert main([*base, "--boxes-dir", str(boxes)]) == 2
    assert "has no XML file for 1 of the 6 images" in capsys.readouterr().err
    (boxes / "ILSVRC2012_val_01.xml").write_text("<annotation><size><width>4</width><height>4</height></size>"
                                                 "<object><name>tench</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                                                 "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>")
    assert main([*base, "--boxes-dir", str(boxes)]) == 2
    assert "no object named after their image's class folder" in capsys.readouterr().err
    assert main([*base, "--boxes-dir", str(tmp_path / "none")]) == 2
    assert "boxes directory" in capsys.readouterr().err


def test_bad_input(tmp_path: Path, capsys):
    cub = make_cub(tmp_path / "cub", test_per_class=2)
    run = make_run(tmp_path / "run", dataset="cub", data_dir=str(cub), in_chans=3, img_size=32, num_classes=2)
    # Every test image held out (5 per class by default for CUB).
    assert main([str(run), "--localization", "cub", *QUICK]) == 2
    assert "lower --loc-holdout" in capsys.readouterr().err
    # A max-pooling head: no CAM.
    maxpool = make_run(tmp_path / "maxpool", dataset="cub", data_dir=str(cub), in_chans=3, img_size=32,
                       num_classes=2, model_kwargs={"base_width": 4, "global_pool": "max"})
    assert main([str(maxpool), "--localization", "cub", "--loc-holdout", "0", *QUICK]) == 2
    assert "not a global average pool" in capsys.readouterr().err
    (cub / "bounding_boxes.txt").unlink()
    assert main([str(run), "--localization", "cub", "--loc-holdout", "0", *QUICK]) == 2
    assert "bounding_boxes.txt missing" in capsys.readouterr().err
    assert main([str(run), "--localization", "cub", "--boxes-dir", str(tmp_path), *QUICK]) == 2
    assert "--boxes-dir is for --localization imagenet" in capsys.readouterr().err


@needs_fmnist
def test_placed_run(tmp_path: Path):
    # Trained at 32 px: the 64 px canvases are resized and their boxes scaled with them.
    run = make_run(tmp_path / "run", dataset="placed_fashion_mnist", img_size=32)
    assert main([str(run), "--localization", "placed", "--limit", "40", "--loc-holdout", "0", *QUICK]) == 0
    report = json.loads((run / "eval.json").read_text())
    loc = report["localization"]
    _check_report(loc, 40, 0)
    assert report["data"].startswith("Placed Fashion-MNIST test split (40 images)")
    assert loc["top1"] == pytest.approx(report["metrics"]["top1"])


@pytest.mark.slow  # trains for one epoch, then evaluates with localization
def test_train_on_cub_then_localize(tmp_path: Path):
    """The paper's CUB protocol end to end: mixkit-train --dataset cub, then mixkit-eval --localization cub with
    nothing but the run directory."""
    import yaml
    from train_fixtures import tiny_args, train_in_process

    cub = make_cub(tmp_path / "CUB_200_2011", classes=3, train_per_class=4, test_per_class=3)
    argv = tiny_args(cub, tmp_path, "--dataset", "cub", "--mixup", "alignmixup")
    argv[argv.index("--val-split") + 1] = "validation"
    summary = train_in_process(argv)
    run = tmp_path / "run"
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert (args["dataset"], args["val_split"], args["num_classes"]) == ("cub", "test", 3)
    assert summary["eval_samples"] == 9 and summary["eval_split"] == "test"
    assert main([str(run), "--localization", "cub", "--loc-holdout", "1", *QUICK]) == 0
    loc = json.loads((run / "eval.json").read_text())["localization"]
    _check_report(loc, 6, 3)


@pytest.mark.slow  # trains for one epoch (about 5 s), then evaluates
def test_train_on_placed_then_localize(tmp_path: Path):
    """mixkit-train --dataset placed_fashion_mnist (64 px canvases, from a tiny IDX folder) and mixkit-eval
    --localization placed on the run, which finds the same IDX folder in its args.yaml."""
    import yaml
    from eval_fixtures import make_idx_fashion_mnist
    from train_fixtures import TINY_MODEL, train_in_process

    idx = make_idx_fashion_mnist(tmp_path / "fmnist", train=32, test=30)
    summary = train_in_process(["--dataset", "placed_fashion_mnist", "--data-dir", str(idx), *TINY_MODEL,
                                "--epochs", "1", "-b", "16", "--lr", "0.05", "--output", str(tmp_path),
                                "--experiment", "run", "--no-progress"])
    run = tmp_path / "run"
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert (args["dataset"], args["img_size"], args["in_chans"], args["val_split"]) == \
        ("placed_fashion_mnist", 64, 1, "test")
    assert summary["eval_samples"] == 30
    assert main([str(run), "--localization", "placed", "--loc-holdout", "0", *QUICK]) == 0
    report = json.loads((run / "eval.json").read_text())
    _check_report(report["localization"], 30, 0)
    assert report["metrics"]["num_samples"] == 30
