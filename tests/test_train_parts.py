"""A method with trainable parts, an extra loss and a saliency pass (tests/parts_probe.py) through
``mixkit-train``: the parts train beside the classifier and are saved beside it, never inside it; the
extra loss is logged; resume is exact with the parts; DDP works when a step leaves them unused."""
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

from mixkit.rundir import create_model_from_run
from mixkit.train import list_checkpoints

PROBE = ["--mixup", "probe", "--model-ema", "--model-ema-decay", "0.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), train_per_class=6)


@pytest.mark.slow
def test_parts_train_beside_the_model_and_resume_exactly(data, tmp_path):
    with registered():
        full = train_in_process(tiny_args(data, tmp_path / "a", *PROBE, epochs=2))
        train_in_process(tiny_args(data, tmp_path / "b", *PROBE, epochs=1))
        train_in_process(tiny_args(data, tmp_path / "b", *PROBE, "--resume", str(tmp_path / "b" / "run"), epochs=2))
    run_a, run_b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    for name in ("model", "model_ema", "probe", "probe_ema"):
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
    assert header == "epoch,train_loss,probe_loss,eval_loss,eval_top1,eval_top5,lr"
    rows = json.loads((run_a / "summary.json").read_text())["epochs"]
    assert all(row["probe_loss"] > 0 for row in rows)
    assert full["final"]["probe_loss"] == rows[-1]["probe_loss"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_averages_the_parts_when_a_step_leaves_them_unused(data, tmp_path):
    """prob 0.5 with per-rank seeds: on some steps one rank uses the probe and the other does not. No DDP
    error, no hang, and both ranks hold the same probe weights after every checkpoint."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()),
           str(REPO / "tests" / "parts_probe.py"),
           *tiny_args(data, tmp_path, "--mixup", "probe", "--batch-size", "4", "--checkpoint-steps", "1")]
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
                for c in checkpoints}) > 1  # the probe did train
