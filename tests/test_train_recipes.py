"""Recipes: FFCV's schedule restated, progressive resizing, --help and the precedence of settings."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from train_fixtures import REPO

from mixkit.train import build_parser, parse_args
from mixkit.train.data import progressive_size


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ffcv_resolution(epoch, min_res, max_res, end_ramp, start_ramp):
    # FFCV's get_resolution (ffcv-imagenet train_imagenet.py), restated.
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    return int(np.round(np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])[0] / 32)) * 32


@pytest.mark.parametrize("epochs", [16, 24, 32, 40, 56, 88])
def test_ffcv_schedules_match_ffcv(epochs):
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    recipe = _load("imagenet_r50")
    preset = recipe.SCHEDULES[f"ffcv-{epochs}"]
    args = parse_args([], defaults={**recipe.DEFAULTS, **preset})
    start, end = args.prog_res[2], args.prog_res[3]
    for e in range(epochs):
        assert progressive_size(e, args.prog_res, 224) == _ffcv_resolution(e, 160, 192, end, start)
    assert (args.eval_img_size, args.crop_pct, args.eval_hflip_tta, args.smoothing) == (256, 224 / 256, True, 0.1)
    # FFCV's cyclic lr per iteration: interp(epoch, [0, 2, E], [1e-4 * lr, lr, 0]) with lr 1.7 at 8 x 512.
    iters = 10
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.7)
    sched, total = create_scheduler_v2(opt, **scheduler_kwargs(args), updates_per_epoch=iters)
    assert total == epochs
    for u in range(0, epochs * iters, 7):
        sched.step_update(u)
        expected = np.interp(u / iters, [0, 2, epochs], [1.7e-4, 1.7, 0.0])
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6, abs=1e-9), u
    assert args.lr_base * (512 * 8) / args.lr_base_size == pytest.approx(1.7)


def test_authors_settings():
    r50 = parse_args([], defaults=_load("imagenet_r50").DEFAULTS)
    assert (r50.model, r50.mixup, r50.mixup_kwargs["mixup_alpha"], r50.opt, r50.weight_decay) == \
        ("resnet50", "alignmixup", 2.0, "sgd", 1e-4)
    assert (r50.epochs, r50.sched, r50.decay_epochs, r50.decay_rate, r50.smoothing) == (300, "step", 75, 0.1, 0.0)
    cifar = _load("cifar_preact18")
    c = parse_args([], defaults=cifar.DEFAULTS)
    assert (c.model, c.lr, c.momentum, c.weight_decay, c.batch_size, c.epochs) == \
        ("preact_resnet18_cifar", 0.1, 0.9, 1e-4, 128, 2000)
    assert c.decay_milestones == [500, 1000, 1500]
    short = parse_args([], defaults={**cifar.DEFAULTS, **cifar.SCHEDULES["short"]})
    assert short.epochs == 200
    # Any engine flag still overrides a recipe.
    assert parse_args(["--epochs", "3", "--mixup", "manifold"], defaults=cifar.DEFAULTS).mixup == "manifold"


@pytest.mark.slow
def test_recipe_help_lists_every_flag_and_schedule():
    out = subprocess.run([sys.executable, "recipes/imagenet_r50.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for action in build_parser()._actions:
        assert action.option_strings[-1] in out.stdout, action.dest
    assert "--schedule" in out.stdout and "ffcv-88" in out.stdout


@pytest.mark.parametrize("recipe", ["cifar_preact18", "imagenet_r50", "fashion_mnist"])
def test_every_registered_method_mixes_under_every_recipe(recipe):
    """``--mixup <name>`` over a recipe's settings builds the method and mixes a batch (alignmixup_ae with
    the recipe's AlignMixup settings: alpha 2 from the recipe, its decoder from the registry)."""
    import timm

    from mixkit.mix import list_mixups
    from mixkit.train import build_mixup

    defaults = _load(recipe).DEFAULTS
    model = timm.create_model("preact_resnet_tiny_cifar", num_classes=4, base_width=4).train()
    x, y = torch.randn(4, 3, 16, 16), torch.arange(4)
    for name in list_mixups():
        args = parse_args(["--mixup", name], defaults=defaults)
        with build_mixup(args, model, num_classes=4) as mix:
            xm, target = mix(x, y)
            model(xm)
            assert target.shape == (4, 4), name
            if name.startswith("alignmixup"):
                assert mix.mixup_alpha == 2.0, name
