"""The best checkpoint (timm's --eval-metric), its restore on resume, and the export timm loads (config.json)."""
from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
import yaml
from safetensors import safe_open
from train_fixtures import load_weights, make_image_folder, tiny_args, train_in_process

import mixkit
from mixkit.rundir import create_model_from_run
from mixkit.train.best import BEST_WEIGHTS_FILE, improves
from mixkit.train.export import write_timm_config

# timm's "local-dir:<folder>" source, with the fix that picks model.safetensors among several .safetensors files
# (timm issue 2725: 1.0.16 - 1.0.28 fail on a run directory; verified with 1.0.31). The file overlay works in all.
LOCAL_DIR = tuple(int(p) for p in timm.__version__.split(".")[:3]) >= (1, 0, 31)

# A high learning rate, so the evaluation moves from epoch to epoch and the best is not simply the last.
ARGS = ["--lr", "0.5", "--eval-metric", "loss", "--checkpoint-hist", "5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), classes=3, train_per_class=6, val_per_class=3)


@pytest.fixture(scope="module")
def run3(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run3")
    summary = train_in_process(tiny_args(data, out, *ARGS, "--mixup", "mixup", epochs=3))
    return out / "run", summary


def _metadata(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_improves_follows_timms_direction():
    assert improves("top1", 50.0, None) and improves("loss", 2.0, None)
    best = {"value": 40.0}
    assert improves("top1", 41.0, best) and not improves("top1", 40.0, best)  # a tie is no improvement
    assert improves("top5", 40.5, best) and not improves("top5", 39.0, best)
    assert improves("loss", 39.0, best) and not improves("loss", 41.0, best) and not improves("loss", 40.0, best)
    assert not improves("top1", None, None)


def test_parser_refuses_an_unknown_eval_metric(capsys):
    from mixkit.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--eval-metric", "top-1"])
    assert "invalid choice: 'top-1'" in capsys.readouterr().err


@pytest.mark.slow
def test_best_is_the_epoch_with_the_lowest_eval_loss(run3):
    run, summary = run3
    rows = json.loads((run / "summary.json").read_text())["epochs"]
    losses = [r["eval_loss"] for r in rows]
    best_epoch = losses.index(min(losses))  # the first minimum: later ties do not replace it
    assert summary["best"] == {"metric": "loss", "value": pytest.approx(min(losses), rel=1e-12), "epoch": best_epoch,
                               "weights": "raw", "file": BEST_WEIGHTS_FILE}
    assert json.loads((run / "summary.json").read_text())["best"]["epoch"] == best_epoch
    # The weights that epoch evaluated: Accelerate's copy of the model in the checkpoint written at its end.
    at_end = load_weights(run / "checkpoints" / f"epoch{best_epoch + 1:04d}-batch000000" / "model.safetensors")
    best = load_weights(run / BEST_WEIGHTS_FILE)
    assert best.keys() == at_end.keys() and all(torch.equal(best[k], at_end[k]) for k in best)
    meta = _metadata(run / BEST_WEIGHTS_FILE)
    assert (meta["epoch"], meta["eval_metric"], meta["weights"], meta["method"]) == (str(best_epoch), "loss", "raw",
                                                                                    "mixup")
    assert float(meta["eval_value"]) == pytest.approx(min(losses), rel=1e-12)


@pytest.mark.slow
def test_resume_restores_the_best_of_its_checkpoint(data, run3, tmp_path):
    """Resuming an earlier checkpoint after its run went on: the best is the checkpoint's, and the continued
    run ends with the uninterrupted run's best (exact resume), whatever the run directory held."""
    full_run, full = run3
    out = tmp_path / "b"
    shutil.copytree(full_run, out / "run")
    (out / "run" / BEST_WEIGHTS_FILE).unlink()
    shutil.copy(full_run / "model.safetensors", out / "run" / BEST_WEIGHTS_FILE)  # a foreign "best"
    ckpt = out / "run" / "checkpoints" / "epoch0001-batch000000"
    resumed = train_in_process(tiny_args(data, out, *ARGS, "--mixup", "mixup", "--resume", str(ckpt), epochs=3))
    assert resumed["best"] == full["best"]
    a, b = load_weights(full_run / BEST_WEIGHTS_FILE), load_weights(out / "run" / BEST_WEIGHTS_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_timm_loads_the_export_with_its_head(run3):
    run, _ = run3
    args = yaml.safe_load((run / "args.yaml").read_text())
    ours, _ = create_model_from_run(run)
    x = torch.randn(2, 3, 16, 16)
    # The file overlay reads num_classes from the pretrained_cfg it overlays: config.json's, so the head loads.
    config = json.loads((run / "config.json").read_text())
    overlay = dict(config["pretrained_cfg"], file=str(run / "model.safetensors"))
    again = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=overlay,
                              **config["model_args"]).eval()
    with torch.no_grad():
        assert torch.equal(again(x), ours(x))
    cfg = again.pretrained_cfg
    assert again.num_classes == args["num_classes"] == 3 and config["label_names"] == args["classes"]
    assert tuple(cfg["input_size"]) == (3, args["img_size"], args["img_size"])
    assert list(cfg["mean"]) == args["mean"] and list(cfg["std"]) == args["std"]
    assert cfg["crop_pct"] == args["crop_pct"] and cfg["interpolation"] == "bilinear"
    if LOCAL_DIR:  # timm's own reader of config.json: the model is rebuilt with the run's classes and model_args
        loaded = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), ours(x))
        assert loaded.num_classes == 3 and loaded.pretrained_cfg["label_names"] == args["classes"]
    assert config["mixkit"]["method"] == "mixup"
    meta = _metadata(run / "model.safetensors")
    assert meta["method"] == "mixup" and meta["weights"] == "raw" and meta["architecture"] == args["model"]
    assert meta["mixkit"].startswith(mixkit.__version__) and meta["mixkit"] == config["mixkit"]["revision"]


def test_timm_config_of_a_timm_model(tmp_path):
    """The same export for one of timm's own models (its registry cfg says 1000 classes, the run's has 4)."""
    from safetensors.torch import save_file

    model = timm.create_model("resnet18", num_classes=4).eval()
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    write_timm_config(model, tmp_path / "config.json", model_args=dict(num_classes=4), in_chans=3, img_size=64,
                      mean=(0.5,) * 3, std=(0.25,) * 3,
                      crop_pct=0.9, interpolation="bicubic", label_names=["a", "b", "c", "d"])
    config = json.loads((tmp_path / "config.json").read_text())
    overlay = dict(config["pretrained_cfg"], file=str(tmp_path / "model.safetensors"))
    loaded = timm.create_model("resnet18", pretrained=True, pretrained_cfg_overlay=overlay, **config["model_args"])
    if LOCAL_DIR:
        loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    loaded.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    data_cfg = timm.data.resolve_data_config({}, model=loaded)
    assert tuple(data_cfg["input_size"]) == (3, 64, 64) and data_cfg["interpolation"] == "bicubic"
    assert data_cfg["crop_pct"] == 0.9 and tuple(data_cfg["mean"]) == (0.5,) * 3
    assert not list(tmp_path.glob(".config.json.tmp-*"))  # written through a temporary and one rename
