"""benchmarks/study.py: a tiny end-to-end study through mixkit-train and mixkit-eval, checked against the runs'
own eval.json files (pairing, deltas, wins, means by hand), plus its readers and flags."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pytest
from eval_fixtures import make_idx_fashion_mnist

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS_DIR) not in sys.path:
    sys.path.append(str(BENCHMARKS_DIR))  # last: never shadows an installed module

import study  # noqa: E402  (needs the path above)
from common import paired_deltas, per_method_stats  # noqa: E402

TINY = ["--train-size", "20", "--epochs", "1", "--loc-train-size", "20", "--loc-epochs", "1", "--base-width", "4",
        "--batch-size", "10", "--attack-samples", "10", "--pgd-steps", "2", "--loc-holdout", "1", "--loc-limit", "40", "--jobs", "1",
        "--no-progress", "--device", "cpu"]


@pytest.mark.slow
def test_tiny_study_pairs_runs_by_seed_and_reports_what_eval_json_says(tmp_path):
    source = make_idx_fashion_mnist(tmp_path / "fmnist", train=120, test=60)
    out, work = tmp_path / "results", tmp_path / "work"
    argv = [*TINY, "--methods", "none", "alignmixup", "--seeds", "0", "1", "--source-dir", str(source),
            "--work-dir", str(work), "--out-dir", str(out)]
    assert study.main(argv) == 0
    result = json.loads((out / "study-cpu.json").read_text())
    assert (out / "study-cpu.md").is_file() and (out / "study-cpu.png").stat().st_size > 0
    assert result["planned"] == result["finished"] == 8 and not result["partial"] and not result["failed"]
    assert [(r["method"], r["seed"]) for r in result["runs"]] == [("none", 0), ("none", 1), ("alignmixup", 0),
                                                                   ("alignmixup", 1)]
    if study.ood_flag()[0]:  # mixkit-eval --ood exists: every classification run has its AUROC and FPR95
        assert all(r["metrics"].get("ood_digits_msp_auroc") is not None for r in result["runs"])
        assert "ood_noise_energy_fpr95" in result["summary"]["paired_vs_alignmixup"]["none"]
    else:
        assert result["ood"].startswith("not available")

    # Every number comes from the run directories' files: read them independently.
    def files(track, method, seed):
        run = work / "runs" / track / f"{method}-seed{seed}"
        return (json.loads((run / "eval.json").read_text()),
                json.loads((run / "eval_train.json").read_text()) if track == "classification" else None)

    hand = {}
    for method in ("none", "alignmixup"):
        for seed in (0, 1):
            test, train = files("classification", method, seed)
            loc, _ = files("localization", method, seed)
            assert test["attacks"]["num_samples"] == 10
            assert test["metrics"]["num_samples"] == 60  # the run's own IDX folder (its --data-dir), not Debian's
            assert train["metrics"]["num_samples"] == 20  # the training subset, evaluated as a test split
            hand[method, seed] = {"top1": test["metrics"]["top1"], "ece": 100 * test["metrics"]["ece"],
                                  "pgd_top1": test["attacks"]["pgd_top1"], "train_top1": train["metrics"]["top1"],
                                  "loc_top1_loc": loc["localization"]["top1_loc"]}
    for r in result["runs"]:
        for k, v in hand[r["method"], r["seed"]].items():
            assert r["metrics"][k] == pytest.approx(v)
        args = r["tracks"]["classification"]["mixkit_train"]
        assert args[args.index("--seed") + 1] == str(r["seed"])
        assert ("--mixup" in args) == (r["method"] == "alignmixup")
    per = result["summary"]["per_method"]
    paired = result["summary"]["paired_vs_alignmixup"]
    assert set(paired) == {"none"}
    for k, higher in (("top1", True), ("ece", False), ("pgd_top1", True), ("train_top1", True),
                      ("loc_top1_loc", True)):
        diffs = [hand["alignmixup", s][k] - hand["none", s][k] for s in (0, 1)]
        got = paired["none"][k]
        assert got["seeds"] == [0, 1]
        assert got["diffs"] == pytest.approx(diffs)
        assert got["mean"] == pytest.approx(statistics.fmean(diffs))
        assert got["std"] == pytest.approx(statistics.stdev(diffs))
        assert got["wins"] == sum((d > 0) if higher else (d < 0) for d in diffs)
        assert per["none"][k]["mean"] == pytest.approx(statistics.fmean(hand["none", s][k] for s in (0, 1)))
    assert result["summary"]["none_train_top1"] == pytest.approx([hand["none", s]["train_top1"] for s in (0, 1)])

    # Resumable: a second invocation finds every run done and trains nothing.
    stamp = (work / "runs" / "classification" / "none-seed0" / "eval.json").stat().st_mtime_ns
    assert study.main(argv) == 0
    assert (work / "runs" / "classification" / "none-seed0" / "eval.json").stat().st_mtime_ns == stamp
    again = json.loads((out / "study-cpu.json").read_text())
    assert again["runs"] == result["runs"]
    # Other settings in the same work directory would mix two studies: refused, naming what differs.
    with pytest.raises(SystemExit, match="epochs: 1 there, 2 now"):
        study.main([*argv, "--epochs", "2"])


def test_paired_deltas_by_hand():
    runs = [{"method": "alignmixup", "seed": 0, "metrics": {"top1": 80.0, "ece": 5.0}},
            {"method": "alignmixup", "seed": 1, "metrics": {"top1": 82.0, "ece": 4.0}},
            {"method": "alignmixup", "seed": 2, "metrics": {"top1": 81.0, "ece": None}},
            {"method": "none", "seed": 0, "metrics": {"top1": 81.0, "ece": 6.0}},
            {"method": "none", "seed": 1, "metrics": {"top1": 79.0, "ece": 3.0}}]
    d = paired_deltas(runs, ["none", "alignmixup"], {"top1": True, "ece": False}, reference="alignmixup")
    assert d["none"]["top1"] == {"seeds": [0, 1], "diffs": [-1.0, 3.0], "mean": 1.0, "std": pytest.approx(2.8284271),
                                 "wins": 1}
    assert d["none"]["ece"]["diffs"] == [-1.0, 1.0] and d["none"]["ece"]["wins"] == 1  # lower ECE wins
    stats = per_method_stats(runs, ["alignmixup", "none", "mixup"], ["ece"])
    assert set(stats) == {"alignmixup", "none"}
    assert stats["alignmixup"]["ece"] == {"mean": 4.5, "std": pytest.approx(0.7071068), "values": [5.0, 4.0],
                                          "seeds": [0, 1]}


def test_ood_reader_flattens_sets_and_scores_in_percent():
    report = {"ood": {"digits": {"msp": {"auroc": 0.9, "fpr95": 0.25, "aupr_in": 0.8},
                                 "energy": {"auroc": 0.95, "fpr95": 0.2}},
                      "noise": {"msp": {"auroc": 0.5, "fpr95": 1.0}}}}
    flat = study.ood_metrics(report)
    assert flat == pytest.approx({"ood_digits_msp_auroc": 90.0, "ood_digits_msp_fpr95": 25.0,
                                  "ood_digits_energy_auroc": 95.0, "ood_digits_energy_fpr95": 20.0,
                                  "ood_noise_msp_auroc": 50.0, "ood_noise_msp_fpr95": 100.0})
    runs = [{"method": "none", "seed": 0, "metrics": flat}]
    directions = study.metric_directions(runs)
    assert directions["ood_digits_msp_auroc"] is True and directions["ood_noise_msp_fpr95"] is False
    assert study.label("ood_digits_energy_fpr95") == "OOD digits energy FPR95 %"
    assert study.ood_metrics({}) == {}


def test_ood_flag_follows_mixkit_eval(monkeypatch):
    import mixkit.eval.cli as cli

    real = cli.build_parser
    if any("--ood" in a.option_strings for a in real()._actions):  # mixkit-eval --ood SET [SET ...] exists
        assert study.ood_flag() == (["--ood", "digits", "noise"], "")
        return
    args, why = study.ood_flag()
    assert args == [] and why.startswith("not available")

    def with_ood(nargs, choices=("digits", "noise", "other")):
        def build():
            p = real()
            p.add_argument("--ood", nargs=nargs, choices=list(choices))
            return p
        return build

    monkeypatch.setattr(cli, "build_parser", with_ood("+"))
    assert study.ood_flag() == (["--ood", "digits", "noise"], "")
    monkeypatch.setattr(cli, "build_parser", with_ood(None))
    assert study.ood_flag() == (["--ood", "digits"], "")
    monkeypatch.setattr(cli, "build_parser", with_ood("+", ("photos",)))
    args, why = study.ood_flag()
    assert args == [] and "none of" in why


def test_every_flag_has_help_and_presets_fill_the_rest():
    parser = study.build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no --help text"
    args = study.parse_args(["--preset", "short", "--epochs", "7"])
    assert args.epochs == 7 and args.train_size == study.PRESETS["short"]["train_size"]
    assert args.methods[0] == "none" and "alignmixup" in args.methods
    from mixkit.mix import list_mixups

    assert set(args.methods) == {"none", *list_mixups()}  # new registry entries join automatically
    with pytest.raises(SystemExit):
        study.parse_args(["--methods", "nonexistent"])
    with pytest.raises(SystemExit):
        study.parse_args(["--seeds", "0", "0"])


def test_plan_runs_builds_the_tools_command_lines(tmp_path):
    from mixkit.eval.cli import build_parser as eval_parser
    from mixkit.train import parse_args as train_parse_args

    args = study.parse_args(["--methods", "none", "cutmix", "--seeds", "3", "--work-dir", str(tmp_path)])
    runs = study.plan_runs(args, study.data_folders(args))
    assert [(r.track, r.method, r.seed) for r in runs] == [("classification", "none", 3),
                                                           ("classification", "cutmix", 3),
                                                           ("localization", "none", 3),
                                                           ("localization", "cutmix", 3)]
    for r in runs:
        parsed = train_parse_args(list(r.train_argv))  # both tools accept every line
        assert parsed.seed == 3 and parsed.val_split == "" and parsed.model_kwargs == {"base_width": args.base_width}
        assert str(parsed.mixup) == ("cutmix" if r.method == "cutmix" else "0.0")
        assert parsed.dataset == ("fashion_mnist" if r.track == "classification" else "placed_fashion_mnist")
        assert parsed.epochs == (args.epochs if r.track == "classification" else args.loc_epochs)
        for argv, _ in r.eval_argvs:
            assert isinstance(eval_parser().parse_args(list(argv)), argparse.Namespace)
        assert not r.done


def test_write_idx_round_trips_through_read_idx(tmp_path):
    import numpy as np

    from mixkit.datasets import read_idx, write_idx

    for array in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([1, -2, 3], dtype=np.int32),
                  np.array([1.5, -2.25], dtype=np.float64)):
        for name in ("a.gz", "a"):
            back = read_idx(write_idx(tmp_path / name, array))
            assert back.shape == array.shape and (back == array).all()
    with pytest.raises(ValueError, match="IDX holds"):
        write_idx(tmp_path / "b", np.zeros(3, dtype=np.int64))
