"""mixkit-eval on run directories fabricated with mixkit.rundir (args.yaml + model.safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_fixtures import make_run
from PIL import Image

from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST
from mixkit.eval.cli import build_parser, main
from mixkit.rundir import create_model_from_run

needs_fmnist = pytest.mark.skipif(not (DEFAULT_FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Debian's dataset-fashion-mnist is not installed")
QUICK = ["--limit", "48", "--attack-samples", "16", "--pgd-steps", "2", "--batch-size", "32", "--no-progress",
         "--device", "cpu"]


@needs_fmnist
@pytest.mark.slow  # reads Fashion-MNIST, evaluates and attacks twice
def test_run_directory_writes_json_and_diagram(tmp_path: Path, capsys):
    run = make_run(tmp_path / "run")
    assert main([str(run), *QUICK]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert (run / "reliability.png").is_file()
    with Image.open(run / "reliability.png") as img:
        assert img.format == "PNG" and img.size == (800, 800)
    m = report["metrics"]
    assert m["num_samples"] == 48 and sum(report["calibration"]["counts"]) == 48
    assert len(report["calibration"]["counts"]) == 15
    # Independent reference: the run's model on the first 48 test images, normalised by hand.
    model, _ = create_model_from_run(run)
    ds = FashionMNIST(train=False)
    x = (ds.images[:48, None].float() / 255 - 0.286) / 0.353
    with torch.no_grad():
        logits = model(x)
    assert m["top1"] == pytest.approx(100 * float((logits.argmax(1) == ds.labels[:48]).float().mean()))
    assert m["nll"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, ds.labels[:48])), rel=1e-4)
    a = report["attacks"]
    assert a["num_samples"] == 16 and a["pgd_steps"] == 2 and a["random_start"] is True
    assert a["eps"] == pytest.approx(8 / 255) and a["pgd_step_size"] == pytest.approx(2.5 * 8 / 255 / 2)
    assert "top-1" in capsys.readouterr().out
    # The EMA weights and an explicit weights file go to files named after them.
    (run / "model.safetensors").rename(run / "model_ema.safetensors")
    assert main([str(run / "model_ema.safetensors"), *QUICK, "--no-attacks"]) == 0
    assert json.loads((run / "eval_model_ema.json").read_text())["attacks"] is None


def _image_folder(root: Path, per_class: int = 3) -> Path:
    g = torch.Generator().manual_seed(0)
    for c in ("cat", "dog"):
        (root / "validation" / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / "validation" / c / f"{i}.png")
    return root


def test_image_folder_run(tmp_path: Path):
    data = _image_folder(tmp_path / "data")
    run = make_run(tmp_path / "run", dataset=None, data_dir=str(data), in_chans=3, img_size=32, num_classes=2)
    out = tmp_path / "out" / "r.json"
    assert main([str(run), "--output", str(out), "--workers", "0", "--pgd-steps", "1", "--no-progress",
                 "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"]["num_samples"] == 6 and report["attacks"]["num_samples"] == 6
    assert Path(report["reliability_diagram"]) == out.with_name("reliability_r.png")


@needs_fmnist
def test_timm_model_with_other_channels_and_classes(tmp_path: Path):
    """--model with --in-chans 1 --num-classes 10: the data follows the model's channels (timm's data config
    still says 3 for resnet18), and the metrics are the checkpoint's own."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10, in_chans=1).eval()
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "eval.json"
    argv = ["--model", "resnet18", "--checkpoint", str(tmp_path / "r18.pth"), "--num-classes", "10",
            "--in-chans", "1", "--dataset", "fashion_mnist", "--img-size", "28", "--output", str(out), *QUICK,
            "--no-attacks"]
    assert main([*argv, "--mean", "0.286", "--std", "0.353"]) == 0
    ds = FashionMNIST(train=False)
    with torch.no_grad():
        logits = model((ds.images[:48, None].float() / 255 - 0.286) / 0.353)
    top1 = 100 * float((logits.argmax(1) == ds.labels[:48]).float().mean())
    assert json.loads(out.read_text())["metrics"]["top1"] == pytest.approx(top1)
    with pytest.raises(ValueError, match="mean has 3 values for a model with 1 input channels: pass --mean"):
        from mixkit.eval.cli import run as run_eval

        run_eval(build_parser().parse_args(argv))


def test_missing_inputs_are_clear_errors(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = make_run(tmp_path / "run", dataset=None, data_dir=str(tmp_path / "no-data"), in_chans=3, img_size=32)
    assert main([str(run), "--no-progress", "--device", "cpu"]) == 2
    assert "no-data does not exist" in capsys.readouterr().err
    (run / "model.safetensors").unlink()
    assert main([str(run), "--no-progress"]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err
    assert main(["--model", "resnet18", "--no-progress"]) == 2
    assert "needs weights" in capsys.readouterr().err
    assert main(["--no-progress"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_help_explains_every_flag():
    parser = build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help text"
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
