"""Exact resume: bitwise-equal weights after an interruption, SIGKILL recovery, the NaN guard."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_fixtures import REPO, load_weights, make_image_folder, run_cli, tiny_args, train_in_process

from mixkit.train import CheckpointError, NonFiniteLossError, list_checkpoints
from mixkit.train.engine import INJECT_NAN_ENV


def _assert_same_weights(a, b):
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), train_per_class=10)


# AlignMixup (random branch per batch, so both branches run), EMA and two loader worker processes.
RESUME_EXTRA = ["--mixup", "alignmixup", "--model-ema", "--model-ema-decay", "0.9", "--workers", "2",
                "--checkpoint-steps", "2"]


@pytest.mark.slow
def test_resume_is_bitwise_exact_at_epoch_end_and_mid_epoch(data, tmp_path):
    full = train_in_process(tiny_args(data, tmp_path / "a", *RESUME_EXTRA, epochs=2))
    run_a = tmp_path / "a" / "run"
    # Epoch-end: a 1-epoch run resumed to 2 epochs (the step schedule does not depend on --epochs).
    train_in_process(tiny_args(data, tmp_path / "b", *RESUME_EXTRA, epochs=1))
    resumed = train_in_process(tiny_args(data, tmp_path / "b", *RESUME_EXTRA, "--resume",
                                         str(tmp_path / "b" / "run"), epochs=2))
    run_b = tmp_path / "b" / "run"
    _assert_same_weights(run_a / "model.safetensors", run_b / "model.safetensors")
    _assert_same_weights(run_a / "model_ema.safetensors", run_b / "model_ema.safetensors")
    assert resumed["final"]["train_loss"] == pytest.approx(full["final"]["train_loss"], rel=1e-12)
    # Mid-epoch: continue from the step checkpoint taken after 2 batches of epoch 1.
    mid = run_a / "checkpoints" / "epoch0001-batch000002"
    assert mid.is_dir(), [p.name for p in list_checkpoints(run_a)]
    c_dir = tmp_path / "c" / "run" / "checkpoints"
    c_dir.mkdir(parents=True)
    shutil.copytree(mid, c_dir / mid.name)
    train_in_process(tiny_args(data, tmp_path / "c", *RESUME_EXTRA, "--resume", str(c_dir / mid.name), epochs=2))
    _assert_same_weights(run_a / "model.safetensors", tmp_path / "c" / "run" / "model.safetensors")
    _assert_same_weights(run_a / "model_ema.safetensors", tmp_path / "c" / "run" / "model_ema.safetensors")


def _digest(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_nan_loss_stops_run_and_keeps_last_checkpoint(data, tmp_path, monkeypatch):
    argv = tiny_args(data, tmp_path, "--checkpoint-steps", "1", epochs=2)
    monkeypatch.setenv(INJECT_NAN_ENV, "6")  # 5 batches per epoch: step 6 is epoch 1, batch 1
    with pytest.raises(NonFiniteLossError, match=r"step 6 \(epoch 1, batch 1\)"):
        train_in_process(argv)
    run = tmp_path / "run"
    names = [p.name for p in list_checkpoints(run)]
    assert names[-1] == "epoch0001-batch000001"  # the checkpoint before the bad step, nothing after it
    before = _digest(run / "checkpoints" / names[-1])
    assert not (run / "model.safetensors").exists()
    monkeypatch.delenv(INJECT_NAN_ENV)
    assert _digest(run / "checkpoints" / names[-1]) == before
    summary = train_in_process(tiny_args(data, tmp_path, "--resume", str(run), epochs=2))
    assert summary["complete"] and (run / "model.safetensors").is_file()


def test_resume_errors(data, tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        train_in_process(tiny_args(data, tmp_path, "--resume", str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        train_in_process(tiny_args(data, tmp_path, "--resume", str(tmp_path / "empty")))
    train_in_process(tiny_args(data, tmp_path, epochs=1))
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    (ckpt / "optimizer.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        train_in_process(tiny_args(data, tmp_path, "--resume", str(ckpt), epochs=2))


@pytest.mark.slow
def test_sigkilled_run_resumes_from_last_checkpoint(data, tmp_path):
    argv = tiny_args(data, tmp_path, "--checkpoint-steps", "1", epochs=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "mixkit.train", *argv], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "run"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and len(list_checkpoints(run)) < 3:
            time.sleep(0.2)
        assert len(list_checkpoints(run)) >= 3, "no checkpoints appeared"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()
    last = list_checkpoints(run)[-1]
    result = run_cli(tiny_args(data, tmp_path, "--resume", str(run), epochs=3))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {last}" in result.stdout
    assert (run / "model.safetensors").is_file()
    assert [r.split(",")[0] for r in (run / "summary.csv").read_text().splitlines()[1:]] == ["0", "1", "2"]
