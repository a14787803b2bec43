"""mixkit's loaders and mixing functions in PyTorch Lightning, single process and DDP on the CPU (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")

SCRIPT = Path(__file__).with_name("lightning_script.py")
ROOT = SCRIPT.parents[1]


def run(devices, tmp_path, where):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PL_DISABLE_FORK": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    return subprocess.run([sys.executable, str(SCRIPT), str(devices), str(tmp_path), where], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2])
def test_loaders_built_in_train_dataloader_shard_by_process_and_mix(tmp_path, devices):
    proc = run(devices, tmp_path, "inside")
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(devices)]
    for result in results:
        ids = result["ids"].view(2, -1)  # two epochs
        assert result["steps"] == 2 * 96 // (8 * devices) and result["mixed"] > 0
        assert all(len(set(epoch.tolist())) == 96 // devices for epoch in ids)  # no sample twice in an epoch
    for epoch in range(2):  # the ranks' shards partition the data set, every epoch
        shards = [set(r["ids"].view(2, -1)[epoch].tolist()) for r in results]
        assert set().union(*shards) == set(range(96)) and sum(map(len, shards)) == 96


@pytest.mark.slow
def test_a_loader_built_before_the_process_group_is_refused(tmp_path):
    proc = run(2, tmp_path, "outside")
    assert proc.returncode != 0
    assert "built as rank 0 of 1" in proc.stderr and "train_dataloader()" in proc.stderr
