"""--resume RUN continues the run from its own args.yaml: no other flag needed, flags given override what
keeps the run exact, and changes that would break it are refused with the list; a finished run resumed
is evaluated, not reported as 'None samples'."""
from __future__ import annotations

import pytest
import torch
from train_fixtures import load_weights, make_image_folder, tiny_args, train_in_process

from mixkit.train import _report, parse_args


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"))


@pytest.mark.slow
def test_resume_from_the_run_alone_is_the_uninterrupted_run(data, tmp_path):
    full = ["--mixup", "alignmixup", "--epochs", "2"]
    train_in_process(tiny_args(data, tmp_path / "a", *full))
    train_in_process(tiny_args(data, tmp_path / "b", "--mixup", "alignmixup", epochs=1))
    run_b = tmp_path / "b" / "run"
    args = parse_args(["--resume", str(run_b), "--epochs", "2"])  # nothing else: the data, model, ... from args.yaml
    assert (args.data_dir, args.model, args.batch_size, str(args.mixup)) == (str(data), "preact_resnet_tiny_cifar", 8,
                                                                              "alignmixup")
    train_in_process(["--resume", str(run_b), "--epochs", "2"])
    a, b = load_weights(tmp_path / "a" / "run" / "model.safetensors"), load_weights(run_b / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changes_that_break_exactness(data, tmp_path):
    train_in_process(tiny_args(data, tmp_path, "--mixup", "alignmixup"))
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"--batch-size 8 -> 4; --mixup 'alignmixup' -> 'manifold'.*--initial-checkpoint"):
        parse_args(["--resume", str(run), "--batch-size", "4", "--mixup", "manifold"])
    assert parse_args(["--resume", str(run), "--epochs", "3", "--log-interval", "5"]).epochs == 3  # allowed


def test_resuming_a_finished_run_evaluates_it(data, tmp_path, capsys):
    first = train_in_process(tiny_args(data, tmp_path))
    again = train_in_process(["--resume", str(tmp_path / "run")])
    _report(again)
    out = capsys.readouterr().out
    assert "already finished its 1 epochs" in out and "None samples" not in out
    assert again["eval_samples"] == first["eval_samples"] == 12
    assert "validation top-1" not in out and "val top-1:" in out  # the split the numbers are on, not "test"


def test_a_run_without_an_evaluation_split_is_not_taken_for_a_finished_one(data, tmp_path, capsys):
    summary = train_in_process(tiny_args(data, tmp_path, "--val-split", ""))
    assert "already finished" not in capsys.readouterr().out
    assert summary["epochs_trained"] == 1 and summary["eval_samples"] is None
