"""Methods with trainable parts through ``mixkit-train``: every registered method that has parts (AlignMixup/AE's
decoder) and a test-only method with a part, an extra loss and a saliency pass (tests/parts_probe.py). The
parts train beside the classifier and are saved beside it, never inside it; the extra loss is logged;
resume is exact with the parts; ``mixkit-eval`` scores the classifier alone; DDP works when a step leaves
the parts unused."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import timm
import torch
from parts_probe import registered
from train_fixtures import REPO, load_weights, make_image_folder, tiny_args, train_in_process

from mixkit.eval.cli import build_parser
from mixkit.eval.cli import run as run_eval
from mixkit.eval.data import image_folder_val
from mixkit.mix import MixupBase, create_mixup, get_mixup_class, list_mixups
from mixkit.rundir import create_model_from_run
from mixkit.train import list_checkpoints

EMA = ["--model-ema", "--model-ema-decay", "0.5"]
# AlignMixup/AE trains its decoder in the feature branch only: the 3 steps of an epoch of these tests can all
# take the input branch (they do with the default input_prob, and with 0.2), and then the decoder rightly stays as
# it was; the DDP test below keeps the default, where steps leave the decoder unused.
FEATURE_BRANCH = {"alignmixup_ae": ["--mixup-kwargs", "input_prob=0"]}


def _with_parts() -> dict[str, tuple[list[str], str]]:
    """Every registered method with parts, and the probe: name -> (part names, extra loss name)."""
    found = {}
    with registered():
        for name in list_mixups():
            if get_mixup_class(name).extra_modules is MixupBase.extra_modules:
                continue
            model = timm.create_model("preact_resnet_tiny_cifar", num_classes=4, base_width=8)
            with create_mixup(name, model=model, num_classes=4) as mix:
                found[name] = (sorted(mix.extra_modules()), mix.extra_loss_name)
    return found


PARTS = _with_parts()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), train_per_class=6)


def test_the_parts_suite_covers_the_registered_methods_with_parts():
    assert "probe" in PARTS and "alignmixup_ae" in PARTS
    assert PARTS["alignmixup_ae"] == (["decoder"], "recon_loss")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(PARTS))
def test_parts_train_beside_the_model_and_resume_exactly(method, data, tmp_path):
    parts, loss_name = PARTS[method]
    flags = ["--mixup", method, *EMA, *FEATURE_BRANCH.get(method, [])]
    with registered():
        full = train_in_process(tiny_args(data, tmp_path / "a", *flags, epochs=2))
        train_in_process(tiny_args(data, tmp_path / "b", *flags, epochs=1))
        train_in_process(tiny_args(data, tmp_path / "b", *flags, "--resume", str(tmp_path / "b" / "run"), epochs=2))
    run_a, run_b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    for name in ("model", "model_ema", *parts, *(f"{part}_ema" for part in parts)):
        a, b = load_weights(run_a / f"{name}.safetensors"), load_weights(run_b / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    first = torch.load(list_checkpoints(run_a)[0] / "train_state_0.pt", weights_only=True)["parts_sha256"]
    assert first != torch.load(list_checkpoints(run_a)[-1] / "train_state_0.pt", weights_only=True)["parts_sha256"]
    # The classifier's weights are timm's state dict, nothing more: mixkit-eval loads them unchanged.
    timm_keys = set(timm.create_model("preact_resnet_tiny_cifar", num_classes=4, base_width=8).state_dict())
    assert set(load_weights(run_a / "model.safetensors")) == timm_keys
    model, _ = create_model_from_run(run_a)
    assert model.num_classes == 4
    header = (run_a / "summary.csv").read_text().splitlines()[0]
    assert header == f"epoch,train_loss,{loss_name},eval_loss,eval_top1,eval_top5,lr"
    rows = json.loads((run_a / "summary.json").read_text())["epochs"]
    assert all(row[loss_name] > 0 for row in rows)
    assert full["final"][loss_name] == rows[-1][loss_name]
    _check_eval_scores_the_classifier_alone(run_a, data, tmp_path)
    # The parts' files round-trip: a fresh method object on the run's model loads them strictly, unchanged.
    model, settings = create_model_from_run(run_a)
    with registered(), create_mixup(method, model=model, num_classes=4, **settings["mixup_kwargs"]) as fresh:
        for name, module in fresh.extra_modules().items():
            saved = load_weights(run_a / f"{name}.safetensors")
            module.load_state_dict(saved)
            assert all(torch.equal(module.state_dict()[k], v) for k, v in saved.items()), name


def _check_eval_scores_the_classifier_alone(run_dir, data, tmp_path):
    """mixkit-eval of the run equals the classifier loaded by timm from model.safetensors, evaluated here (--raw:
    the run keeps an EMA, which mixkit-eval scores by default)."""
    report = run_eval(build_parser().parse_args([str(run_dir), "--raw", "--output", str(tmp_path / "eval.json"), "--no-attacks",
                                                 "--workers", "0", "--no-progress", "--device", "cpu"]))
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=4, base_width=8,
                              checkpoint_path=str(run_dir / "model.safetensors")).eval()
    _, settings = create_model_from_run(run_dir)
    val = image_folder_val(data, img_size=16, split="val", crop_pct=settings["crop_pct"], workers=0)
    mean, std = torch.tensor(report["mean"]).view(1, 3, 1, 1), torch.tensor(report["std"]).view(1, 3, 1, 1)
    correct = total = 0
    with torch.no_grad():
        for x, y in val.batches:
            correct += int((model((x - mean) / std).argmax(1) == y).sum())
            total += len(y)
    assert report["metrics"]["num_samples"] == total
    assert report["metrics"]["top1"] == pytest.approx(100 * correct / total)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(PARTS))
def test_ddp_averages_the_parts_when_a_step_leaves_them_unused(method, data, tmp_path):
    """Per-rank seeds: on some steps one rank uses the parts and the other does not (the probe's prob 0.5,
    AlignMixup/AE's input-mixup branch). No DDP error, no hang, and both ranks hold the same parts after
    every checkpoint."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()),
           str(REPO / "tests" / "parts_probe.py"),  # mixkit-train with the probe registered too
           *tiny_args(data, tmp_path, "--mixup", method, "--batch-size", "4", "--checkpoint-steps", "1")]
    env = {**__import__("os").environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    checkpoints = list_checkpoints(tmp_path / "run")
    assert len(checkpoints) >= 3
    for ckpt in checkpoints:
        states = [torch.load(ckpt / f"train_state_{r}.pt", weights_only=True) for r in range(2)]
        assert states[0]["parts_sha256"] == states[1]["parts_sha256"], ckpt.name
        assert states[0]["params_sha256"] == states[1]["params_sha256"], ckpt.name
    assert len({json.dumps(torch.load(c / "train_state_0.pt", weights_only=True)["parts_sha256"])
                for c in checkpoints}) > 1  # the parts did train
