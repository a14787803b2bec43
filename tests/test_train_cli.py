"""mixkit-train's command line: timm's flags and meanings, --mixup as alpha or method, YAML config."""
from __future__ import annotations

import argparse

import pytest
import timm
import torch
import yaml
from timm.data import Mixup

import mixkit
from mixkit.train import build_mixup, build_parser, parse_args, resolve_lr, validate_args

# Flags the issue names, each with timm train.py's default.
TIMM_DEFAULTS = {
    "train_split": "train", "val_split": "validation", "model": "resnet50", "pretrained": False,
    "num_classes": None, "img_size": None, "in_chans": None, "batch_size": 128, "epochs": 300, "opt": "sgd",
    "lr": None, "lr_base": 0.1, "momentum": 0.9, "weight_decay": 2e-5, "sched": "cosine", "warmup_epochs": 5,
    "decay_epochs": 90, "decay_milestones": [90, 180, 270], "decay_rate": 0.1, "min_lr": 0.0,
    "smoothing": 0.1, "amp": False, "amp_dtype": "float16", "channels_last": False, "grad_accum_steps": 1,
    "clip_grad": None, "model_ema": False, "model_ema_decay": 0.9998, "output": "", "experiment": "",
    "resume": "", "seed": 42, "workers": 4, "log_interval": 50, "mixup": 0.0, "cutmix": 0.0,
    "cutmix_minmax": None, "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch",
    "mixup_off_epoch": 0, "checkpoint_hist": 10,
}


def test_timm_flags_and_defaults():
    args = parse_args([])
    for key, value in TIMM_DEFAULTS.items():
        assert getattr(args, key) == value, key
    args = parse_args(["--data-dir", "d", "--model", "resnet18", "--pretrained", "--num-classes", "7",
                       "--img-size", "64", "--in-chans", "3", "-b", "32", "--epochs", "3", "--opt", "adamw",
                       "--lr", "0.01", "--lr-base", "0.2", "--momentum", "0.8", "--weight-decay", "0.05",
                       "--sched", "multistep", "--warmup-epochs", "1", "--decay-epochs", "2",
                       "--decay-milestones", "1", "2", "--decay-rate", "0.5", "--min-lr", "1e-6",
                       "--smoothing", "0", "--amp", "--amp-dtype", "bfloat16", "--channels-last",
                       "--grad-accum-steps", "2", "--clip-grad", "1.0", "--model-ema", "--model-ema-decay",
                       "0.99", "--output", "o", "--experiment", "e", "--resume", "r", "--seed", "1",
                       "-j", "2", "--log-interval", "5", "--train-split", "tr", "--val-split", "va"])
    assert (args.data_dir, args.model, args.pretrained, args.num_classes, args.img_size) == ("d", "resnet18", True, 7, 64)
    assert (args.batch_size, args.epochs, args.opt, args.lr, args.lr_base) == (32, 3, "adamw", 0.01, 0.2)
    assert args.decay_milestones == [1, 2] and args.decay_rate == 0.5 and args.amp_dtype == "bfloat16"
    assert (args.grad_accum_steps, args.clip_grad, args.model_ema_decay, args.workers) == (2, 1.0, 0.99, 2)
    assert (args.train_split, args.val_split) == ("tr", "va")


def test_help_explains_every_flag():
    for action in build_parser()._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.dest


def test_lr_base_scaling_matches_timm_rule():
    # timm: lr = lr_base * global_batch / lr_base_size (linear), sqrt for adaptive optimisers.
    args = parse_args(["-b", "64", "--grad-accum-steps", "2"])
    assert resolve_lr(args, world_size=4) == pytest.approx(0.1 * 512 / 256)
    assert args.lr is None  # resolved, not written back into the parsed arguments
    args = parse_args(["-b", "64", "--opt", "adamw", "--lr-base", "0.001"])
    assert resolve_lr(args, world_size=1) == pytest.approx(0.001 * (64 / 256) ** 0.5)


def test_float_mixup_builds_timm_mixup_with_that_alpha():
    args = parse_args(["--mixup", "0.8", "--smoothing", "0.1"])
    fn = build_mixup(args, torch.nn.Linear(2, 2), num_classes=10)
    assert type(fn) is Mixup and fn.mixup_alpha == 0.8 and fn.cutmix_alpha == 0.0 and fn.label_smoothing == 0.1
    assert build_mixup(parse_args([]), torch.nn.Linear(2, 2), num_classes=10) is None
    cut = build_mixup(parse_args(["--cutmix", "1.0"]), torch.nn.Linear(2, 2), num_classes=10)
    assert type(cut) is Mixup and cut.cutmix_alpha == 1.0


def test_named_mixup_builds_mixkit_method_with_kwargs():
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=10, base_width=8)
    args = parse_args(["--mixup", "alignmixup", "--mixup-kwargs", "input_prob=0.25", "solver=pot", "eps=0.05"])
    fn = build_mixup(args, model, num_classes=10)
    assert isinstance(fn, mixkit.AlignMixup)
    assert fn.input_prob == 0.25 and fn.solver == "pot" and fn.eps == 0.05
    fn.remove()
    man = build_mixup(parse_args(["--mixup", "manifold"]), model, num_classes=10)
    assert isinstance(man, mixkit.ManifoldMixup)
    man.remove()


def test_paper_preset_keeps_the_authors_loss_unless_smoothing_is_given():
    """`--mixup alignmixup_paper` trains with the authors' unsmoothed targets (timm's 0.1 is only the default
    of methods without a preset value); an explicit --smoothing still wins."""
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=10, base_width=8)
    args = parse_args(["--mixup", "alignmixup_paper"])
    assert args.smoothing == 0.0
    fn = build_mixup(args, model, num_classes=10)
    assert (fn.label_smoothing, fn.solver, fn.projection, fn.pairing) == (0.0, "reference", "scaled_plan", "random")
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    _, target = fn(x, y)
    assert target.min() == 0.0  # no smoothing mass on the classes of neither image
    fn.remove()
    assert parse_args(["--mixup", "alignmixup"]).smoothing == 0.1
    assert parse_args(["--mixup", "alignmixup_paper", "--smoothing", "0.2"]).smoothing == 0.2
    fn = build_mixup(parse_args(["--mixup", "alignmixup_paper", "--smoothing", "0.2"]), model, num_classes=10)
    assert fn.label_smoothing == 0.2
    fn.remove()


def test_mixup_errors():
    with pytest.raises(SystemExit):
        parse_args(["--mixup", "alignmix"])  # neither a float nor a method
    with pytest.raises(ValueError, match="--cutmix"):
        validate_args(parse_args(["--mixup", "alignmixup", "--cutmix", "1.0"]))
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=10, base_width=8)
    with pytest.raises(ValueError, match="bogus"):
        build_mixup(parse_args(["--mixup", "alignmixup", "--mixup-kwargs", "bogus=1"]), model, num_classes=10)
    with pytest.raises(ValueError, match="layer"):
        build_mixup(parse_args(["--mixup", "alignmixup", "--mixup-kwargs", "layers=['nolayer']"]), model,
                    num_classes=10)
    with pytest.raises(ValueError, match="--opt"):
        validate_args(parse_args(["--opt", "sgdd"]))


def test_yaml_config_sets_defaults_and_command_line_wins(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": "resnet18", "batch_size": 16, "mixup": "alignmixup",
                                   "mixup_kwargs": {"input_prob": 0.5}, "epochs": 7}))
    args = parse_args(["-c", str(cfg), "--epochs", "9"])
    assert (args.model, args.batch_size, args.mixup, args.epochs) == ("resnet18", 16, "alignmixup", 9)
    assert args.mixup_kwargs == {"input_prob": 0.5}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"batch_sise": 16}))
    with pytest.raises(SystemExit):
        parse_args(["-c", str(bad)])


def test_recipe_defaults_sit_below_config_and_command_line(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("lr: 0.3\n")
    args = parse_args(["-c", str(cfg), "--epochs", "2"], defaults={"lr": 0.1, "epochs": 5, "opt": "momentum"})
    assert (args.lr, args.epochs, args.opt) == (0.3, 2, "momentum")


class _RecordingNamespace(argparse.Namespace):
    """Records every attribute the engine reads (``vars(args)``, e.g. for args.yaml, reads none)."""

    def __getattribute__(self, name):
        if not name.startswith("_"):
            object.__getattribute__(self, "__dict__").setdefault("_read", set()).add(name)
        return super().__getattribute__(name)


@pytest.mark.slow
def test_every_flag_the_parser_accepts_is_read_by_the_engine(tmp_path):
    """No flag is accepted and ignored: one short run reads every parser destination (``--config`` is
    consumed by the parser itself). The flags that switch a branch on are given so their options count."""
    from train_fixtures import make_image_folder, tiny_args

    from mixkit.train import train

    data = make_image_folder(tmp_path / "data", classes=2, train_per_class=4, val_per_class=2)
    argv = tiny_args(data, tmp_path, "--mixup", "alignmixup", "--model-ema", "--clip-grad", "5",
                     "--opt-kwargs", "nesterov=False")
    i = argv.index("--lr")
    argv = argv[:i] + argv[i + 2:]  # the lr-base flags are read only when --lr is not given
    args = _RecordingNamespace(**vars(parse_args(argv)))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    try:
        train(args)
    finally:
        AcceleratorState._reset_state(True)
    dests = {a.dest for a in build_parser()._actions if a.dest != "help"}
    unread = dests - vars(args)["_read"] - {"config"}
    assert not unread, f"flags accepted but never read: {sorted(unread)}"


def test_opt_kwargs_reach_the_optimizer(tmp_path, monkeypatch):
    """--opt-kwargs is passed to timm's create_optimizer_v2 (as timm's train.py does); it was dropped."""
    import timm.optim
    from accelerate.state import AcceleratorState
    from train_fixtures import make_image_folder, tiny_args

    from mixkit.train import train

    data = make_image_folder(tmp_path / "data", classes=2, train_per_class=4, val_per_class=2)
    built = []
    real = timm.optim.create_optimizer_v2

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(timm.optim, "create_optimizer_v2", spy)
    AcceleratorState._reset_state(True)
    try:
        train(parse_args(tiny_args(data, tmp_path, "--opt", "momentum", "--opt-kwargs", "dampening=0.25")))
    finally:
        AcceleratorState._reset_state(True)
    assert [g["dampening"] for g in built[0].param_groups] == [0.25, 0.25]
    assert yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())["opt_kwargs"] == {"dampening": 0.25}


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(capsys):
    from mixkit.train.progress import EpochProgress

    bar = EpochProgress(3, epoch=1, interactive=False)
    for _ in range(3):
        bar.wait_done()
        bar.step_done(8)
    bar.show(lr=0.1, loss=1.25, recon_loss=0.5)
    bar.close()
    err = capsys.readouterr().err
    assert bar.interval_images_per_s() == pytest.approx(24 / (bar.data_s + bar.compute_s))  # all 3 batches
    assert bar.interval_images_per_s() == 0.0  # nothing since the last call
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("train 1: 3/3 loss 1.2500 recon_loss 0.5000 lr 0.1 ")
