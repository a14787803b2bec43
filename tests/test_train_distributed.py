"""Several processes and several nodes on the CPU (Accelerate, gloo DDP).

``--multi_gpu`` with ``ACCELERATE_USE_CPU=1`` runs real gloo DDP; ``--cpu --num_processes 2`` would silently
run one process (accelerate issue 2741).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch
from train_fixtures import REPO, make_image_folder, tiny_args

from mixkit.train import list_checkpoints

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
ENV = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    import os

    return {**os.environ, **ENV}


def _rank_states(run):
    ckpt = list_checkpoints(run)[-1]
    return [torch.load(ckpt / f"train_state_{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 5 classes x 3 = 15 validation images: the two ranks hold 7 and 8.
    return make_image_folder(tmp_path_factory.mktemp("data"), classes=5, train_per_class=7, val_per_class=3)


@pytest.mark.slow
def test_two_processes_same_weights_and_each_eval_sample_once(data, tmp_path):
    port = _free_port()
    cmd = ACCELERATE + ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port",
                        str(port), "-m", "mixkit.train",
                        *tiny_args(data, tmp_path, "--mixup", "alignmixup", "--batch-size", "4", "--checkpoint-steps", "3")]
    res = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["eval_samples"] == 15
    mid, end = list_checkpoints(run)
    # After 3 steps: the same parameters on both ranks (DDP); BatchNorm statistics are per rank until the
    # epoch end, where --dist-bn reduce averages them: then the whole state dicts are equal.
    states = [torch.load(mid / f"train_state_{r}.pt", weights_only=True) for r in range(2)]
    assert mid.name == "epoch0000-batch000003" and states[0]["params_sha256"] == states[1]["params_sha256"]
    states = [torch.load(end / f"train_state_{r}.pt", weights_only=True) for r in range(2)]
    assert states[0]["weights_sha256"] == states[1]["weights_sha256"]
    states = _rank_states(run)
    a, b = (set(s["train_shard"].tolist()) for s in states)
    assert not a & b and len(a) == len(b) == 17  # 35 training images cut to 34, halved


@pytest.mark.slow
def test_two_nodes_on_one_machine_train_disjoint_shards(data, tmp_path):
    port = _free_port()
    procs = []
    for node in (0, 1):
        cmd = ACCELERATE + ["--multi_gpu", "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(node),
                            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "-m", "mixkit.train",
                            *tiny_args(data, tmp_path, "--batch-size", "4")]
        procs.append(subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600))
        finally:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-4000:]
    run = tmp_path / "run"
    states = _rank_states(run)
    a, b = (set(s["train_shard"].tolist()) for s in states)
    assert not a & b and len(a) == len(b) == 17
    assert states[0]["weights_sha256"] == states[1]["weights_sha256"]
    assert json.loads((run / "summary.json").read_text())["eval_samples"] == 15
