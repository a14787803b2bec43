"""One rule for the EMA: a run's numbers are its EMA's when it keeps one, in mixkit-train and in mixkit-eval."""
from __future__ import annotations

import json

import pytest
from train_fixtures import make_image_folder, run_cli, tiny_args

from mixkit.eval.cli import main as eval_main

EVAL = ["--no-attacks", "--no-progress", "--device", "cpu", "--workers", "0"]


@pytest.mark.slow
def test_training_and_evaluation_score_the_same_weights(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", classes=3, train_per_class=6, val_per_class=4)
    # decay 0.5: the EMA is far from the trained weights after a few updates, so the two scores differ.
    done = run_cli(tiny_args(data, tmp_path, "--model-ema", "--model-ema-decay", "0.5", "--lr", "0.5", epochs=2))
    assert done.returncode == 0, done.stderr
    assert "EMA weights; raw weights top1" in done.stdout and "mixkit-eval scores them too" in done.stdout
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    final = summary["epochs"][-1]
    assert summary["eval_weights"] == "ema" and final["eval_weights"] == "ema"

    assert eval_main([str(run), *EVAL]) == 0
    assert "weights: the run's EMA weights" in capsys.readouterr().out
    report = json.loads((run / "eval.json").read_text())
    assert report["scored_weights"] == "ema" and report["weights"].endswith("model_ema.safetensors")
    # The same weights, data and preprocessing as the training's last evaluation: the same numbers.
    assert report["metrics"]["top1"] == pytest.approx(final["eval_top1"])
    assert report["metrics"]["nll"] == pytest.approx(final["eval_loss"], rel=1e-4)

    assert eval_main([str(run), "--raw", "--output", str(tmp_path / "raw.json"), *EVAL]) == 0
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert raw["scored_weights"] == "raw" and raw["weights"].endswith("/model.safetensors")
    assert raw["metrics"]["top1"] == pytest.approx(final["eval_top1_raw"])
    assert eval_main([str(run), "--raw", "--ema", *EVAL]) == 2
    assert "exclude each other" in capsys.readouterr().err
