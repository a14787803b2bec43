"""mixkit.rundir: a run directory written and read back."""

import os

import pytest
import timm
import torch
import yaml

from mixkit.rundir import create_model_from_run, load_run_args, save_model_safetensors

ARGS = {"model": "preact_resnet_tiny_cifar", "num_classes": 10, "in_chans": 1, "img_size": 28,
        "mean": [0.5], "std": [0.25], "model_kwargs": {"base_width": 8}}


def _run(tmp_path, args=ARGS):
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=10, in_chans=1, base_width=8)
    (tmp_path / "args.yaml").write_text(yaml.safe_dump(args))
    save_model_safetensors(model, tmp_path / "model.safetensors")
    return model.eval()


def test_round_trip(tmp_path):
    model = _run(tmp_path)
    x = torch.randn(3, 1, 28, 28)
    for path in (tmp_path, tmp_path / "model.safetensors"):
        loaded, args = create_model_from_run(path)
        assert not loaded.training and args["img_size"] == 28
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    # The umask's permissions, as every output of the package (safetensors' save_file would give 0600).
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_ema_weights_are_a_separate_file(tmp_path):
    _run(tmp_path)
    with pytest.raises(FileNotFoundError, match="model_ema.safetensors is missing"):
        create_model_from_run(tmp_path, ema=True)


def test_save_replaces_atomically(tmp_path):
    model = _run(tmp_path)
    with torch.no_grad():
        model.fc.bias.fill_(1.0)
    save_model_safetensors(model, tmp_path / "model.safetensors")
    loaded, _ = create_model_from_run(tmp_path)
    assert torch.equal(loaded.fc.bias, torch.ones(10))


@pytest.mark.parametrize("content, error, match", [
    (None, FileNotFoundError, "args.yaml is missing"),
    ("- a list\n", ValueError, "not a YAML mapping"),
    (yaml.safe_dump({"model": "resnet18"}), ValueError, "lacks num_classes, in_chans, img_size, mean, std"),
])
def test_bad_run_directories(tmp_path, content, error, match):
    if content is not None:
        (tmp_path / "args.yaml").write_text(content)
    with pytest.raises(error, match=match):
        load_run_args(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model_from_run(tmp_path / "nope")
