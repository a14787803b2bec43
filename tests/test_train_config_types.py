"""A -c/--config YAML file's values get the command line's conversion and messages (issue 20): each of the
issue's four cases is checked against the same value given as flags, the independent reference here."""
from __future__ import annotations

import pytest
import yaml

from mixkit.train import main, parse_args, validate_args


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


def test_a_float_for_an_int_is_the_command_lines_error(tmp_path, capsys):
    cli = _error(capsys, ["--epochs", "2.0"])
    cfg = _error(capsys, ["-c", _config(tmp_path, "epochs: 2.0\n")])
    assert "argument --epochs: invalid int value: '2.0'" in cli
    assert "argument --epochs: invalid int value: '2.0'" in cfg and "cfg.yaml" in cfg


def test_one_number_for_a_range_is_the_command_lines_error(tmp_path):
    from_cli = parse_args(["--scale", "0.5"])
    from_cfg = parse_args(["-c", _config(tmp_path, "scale: 0.5\n")])
    assert from_cfg.scale == from_cli.scale == [0.5]  # a list, as nargs='+' gives, not a bare float
    for args in (from_cli, from_cfg):
        with pytest.raises(ValueError, match="--scale takes two numbers"):
            validate_args(args)
    assert parse_args(["-c", _config(tmp_path, "scale: [0.25, 1]\n")]).scale == [0.25, 1.0]


def test_a_list_for_one_value_is_refused(tmp_path, capsys):
    cfg = _error(capsys, ["-c", _config(tmp_path, "lr: [0.1]\n")])
    assert "argument --lr: expected one argument" in cfg
    cli = _error(capsys, ["--lr"])
    assert "argument --lr: expected one argument" in cli
    assert parse_args(["-c", _config(tmp_path, "lr: 0.1\n")]).lr == 0.1


def test_a_number_for_a_path_is_read_as_the_command_line_reads_it(tmp_path, capsys):
    assert parse_args(["-c", _config(tmp_path, "resume: 3\n")]).resume == parse_args(["--resume", "3"]).resume == "3"
    from train_fixtures import make_image_folder

    data = make_image_folder(tmp_path / "data", classes=2, train_per_class=2, val_per_class=1)
    cfg = _config(tmp_path, yaml.safe_dump({"resume": 3, "data_dir": str(data), "val_split": "val"}))
    assert main(["-c", cfg]) == 2
    err = capsys.readouterr().err
    assert "mixkit-train: error:" in err and "3" in err and "Traceback" not in err


@pytest.mark.parametrize("text, message", [
    ("amp: 3\n", "argument --amp: a switch"),
    ("input_size: [3, 32]\n", "argument --input-size: expected 3 arguments"),
    ("epochs: null\n", "argument --epochs: needs a value"),
    ("mixup: bogus\n", "argument --mixup: 'bogus' is neither"),
    ("mixup_kwargs: 3\n", "argument --mixup-kwargs: expected a mapping"),
    ("mixup_kwargs: [input_prob]\n", "--mixup-kwargs takes key=value pairs"),
])
def test_other_wrong_types_name_the_flag(tmp_path, capsys, text, message):
    assert message in _error(capsys, ["-c", _config(tmp_path, text)])


def test_right_types_still_load(tmp_path):
    args = parse_args(["-c", _config(tmp_path, yaml.safe_dump({
        "epochs": 3, "lr": 1, "mean": [0.5, 0.5, 0.5], "amp": True, "mixup": "alignmixup", "num_classes": None,
        "mixup_kwargs": {"input_prob": 0.5}, "opt_kwargs": ["nesterov=False"], "input_size": [3, 32, 32]}))])
    assert (args.epochs, args.lr, args.mean, args.amp, args.mixup) == (3, 1.0, [0.5] * 3, True, "alignmixup")
    assert args.mixup_kwargs == {"input_prob": 0.5} and args.opt_kwargs == {"nesterov": False}
    assert args.input_size == [3, 32, 32] and args.num_classes is None
