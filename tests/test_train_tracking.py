"""--log-with: Accelerate's trackers, checked names, a clear error for a missing package, TensorBoard read back."""
from __future__ import annotations

import importlib.util

import pytest
import yaml

from mixkit.train import parse_args
from mixkit.train.tracking import resolve_log_with


def test_names_comma_lists_and_log_wandb_alias(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_log_with("none") == [] and resolve_log_with("") == []
    assert resolve_log_with("TensorBoard, mlflow") == ["tensorboard", "mlflow"]
    assert resolve_log_with("tensorboard", log_wandb=True) == ["tensorboard", "wandb"]
    import os
    assert os.environ["WANDB_MODE"] == "offline"  # never a network unless the user asks
    monkeypatch.setenv("WANDB_MODE", "online")
    resolve_log_with("wandb")
    assert os.environ["WANDB_MODE"] == "online"
    with pytest.raises(ValueError, match="unknown tracker.*tensorbord"):
        resolve_log_with("tensorbord")


def test_missing_tracker_names_the_pip_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ValueError, match="pip install mlflow"):
        resolve_log_with("mlflow")
    assert "mlflow" not in resolve_log_with("all")


def test_tensorboard_events_hold_epoch_and_step_points(tmp_path):
    pytest.importorskip("tensorboard")
    from accelerate.state import AcceleratorState
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from train_fixtures import make_image_folder, tiny_args

    from mixkit.train import train

    data = make_image_folder(tmp_path / "data", classes=2, train_per_class=4, val_per_class=2)
    AcceleratorState._reset_state(True)
    try:
        summary = train(parse_args(tiny_args(data, tmp_path, "--log-with", "tensorboard", "--log-interval", "1")))
    finally:
        AcceleratorState._reset_state(True)
    run = tmp_path / "run"
    events = [p.parent for p in run.rglob("events.out.tfevents.*")]
    assert events, list(run.rglob("*"))
    tags: dict[str, list[float]] = {}
    for d in set(events):
        acc = EventAccumulator(str(d))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            tags[tag] = [e.value for e in acc.Scalars(tag)]
    assert tags["epoch/train_loss"][-1] == pytest.approx(summary["final"]["train_loss"], rel=1e-5)
    assert tags["epoch/eval_top1"][-1] == pytest.approx(summary["final"]["eval_top1"], rel=1e-5)
    assert len(tags["train/loss"]) >= 1 and "train/lr" in tags
    # One throughput point per logged step (every batch here), each a positive rate.
    assert len(tags["train/images_per_s"]) == len(tags["train/loss"]) and min(tags["train/images_per_s"]) > 0
    recorded = yaml.safe_load((run / "args.yaml").read_text())
    assert recorded["log_with"] == ["tensorboard"] and recorded["mixed_precision"] == "no"
    assert summary["mixed_precision"] == "no"


def test_every_tracker_writes_inside_the_run_directory(tmp_path, monkeypatch):
    """Accelerate hands its logging directory to TensorBoard only; wandb (dir) and mlflow (tracking URI and
    artifacts) are pointed at the run directory, or they would write ./wandb and ./mlruns where the run started."""
    from mixkit.train.tracking import tracker_init_kwargs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracker_init_kwargs(["tensorboard"], tmp_path) == {}
    kw = tracker_init_kwargs(["wandb", "mlflow"], tmp_path)
    assert kw == {"wandb": {"dir": str(tmp_path)}, "mlflow": {"logging_dir": str(tmp_path / "mlruns")}}
    import os
    assert os.environ["MLFLOW_TRACKING_URI"] == (tmp_path.resolve() / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    tracker_init_kwargs(["mlflow"], tmp_path)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"  # the user's server is kept
