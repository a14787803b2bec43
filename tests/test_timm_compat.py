"""mixkit.timm_compat: ``--mixup alignmixup`` in timm's train.py, prefetcher on and off.

The loop below re-states what upstream train.py does around mixing (its mixup flags, the mixup setup
with the patch of docs/timm_train_py.patch applied, and train_one_epoch's order: loader, device
transfer without the prefetcher, mixup_fn, model, SoftTargetCrossEntropy, backward, step). It is written
here, not copied. References are timm's own objects and formulas (Mixup, FastCollateMixup,
mixup_target) and plain re-statements of mixup.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from timm.data import FastCollateMixup, Mixup, create_dataset, create_loader
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3

import mixkit
from mixkit.mix import get_mixup_class, list_mixups
from mixkit.timm_compat import MixupMethod, create_timm_mixup, is_mixup_method, method_kwargs, mixup_arg

ROOT = Path(__file__).resolve().parents[1]
PATCH = ROOT / "docs" / "timm_train_py.patch"
PARTS_PATCH = ROOT / "docs" / "timm_train_py_parts.patch"  # the two more lines for methods with parts
DOC = ROOT / "docs" / "timm_train_py.md"
NUM_CLASSES = 4
IMG = 16
BATCH = 8
MODEL = "preact_resnet_tiny_cifar"  # layer4 gives 2x2 maps at 16 px


def train_py_parser() -> argparse.ArgumentParser:
    """timm train.py's mixing flags (names, defaults, meanings), with the patch's --mixup type."""
    parser = argparse.ArgumentParser(prog="train.py")
    parser.add_argument("--mixup", type=mixup_arg, default=0.0)
    parser.add_argument("--cutmix", type=float, default=0.0)
    parser.add_argument("--cutmix-minmax", type=float, nargs="+", default=None)
    parser.add_argument("--mixup-prob", type=float, default=1.0)
    parser.add_argument("--mixup-switch-prob", type=float, default=0.5)
    parser.add_argument("--mixup-mode", type=str, default="batch")
    parser.add_argument("--mixup-off-epoch", type=int, default=0)
    parser.add_argument("--smoothing", type=float, default=0.1)
    parser.add_argument("--no-prefetcher", action="store_true", default=False)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    args = train_py_parser().parse_args(argv)
    args.prefetcher = not args.no_prefetcher
    return args


def mixup_args_of(args: argparse.Namespace) -> dict:
    return dict(
        mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
        prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
        label_smoothing=args.smoothing, num_classes=NUM_CLASSES,
    )


def setup_mixup(args, model, **settings):
    """train.py's mixup setup with the patch applied: (mixup_active, collate_fn, mixup_fn)."""
    collate_fn = mixup_fn = None
    mixup_active = args.mixup > 0 or args.cutmix > 0.0 or args.cutmix_minmax is not None
    if mixup_active:
        mixup_args = mixup_args_of(args)
        if args.prefetcher and not is_mixup_method(args.mixup):
            collate_fn = FastCollateMixup(**mixup_args)
        else:
            mixup_fn = create_timm_mixup(model, mixup_args, args, **settings)
    return mixup_active, collate_fn, mixup_fn


def new_model() -> torch.nn.Module:
    return timm.create_model(MODEL, num_classes=NUM_CLASSES)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The model is tiny: on a shared 2-core machine, intra-op threads cost more than they save (10x here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """A tiny ImageFolder with timm's ``train/`` split: 4 classes x 8 PNGs of 16x16."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for c in range(NUM_CLASSES):
        folder = root / "train" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(8):
            pixels = (rng.random((IMG, IMG, 3)) * 160 + 30 * c).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def make_loader(root: Path, args, collate_fn):
    dataset = create_dataset("", root=str(root), split="train", is_training=True)
    return create_loader(
        dataset, input_size=(3, IMG, IMG), batch_size=BATCH, is_training=True, use_prefetcher=args.prefetcher,
        device=torch.device("cpu"), collate_fn=collate_fn, num_workers=0,
        persistent_workers=False,  # timm 1.0.12 defaults it to True, which torch refuses without workers
    )


# --- parsing and construction ------------------------------------------------------------------------------


def test_float_keeps_timms_meaning():
    assert parse([]).mixup == 0.0 and type(parse([]).mixup) is float
    args = parse(["--mixup", "0.8"])
    assert type(args.mixup) is float and args.mixup == 0.8
    assert not is_mixup_method(args.mixup)
    model = new_model()

    _, collate_fn, mixup_fn = setup_mixup(args, model)  # prefetcher on: timm mixes in the collate
    assert mixup_fn is None
    assert type(collate_fn) is FastCollateMixup and collate_fn.mixup_alpha == 0.8 and collate_fn.cutmix_alpha == 0.0

    args = parse(["--mixup", "0.8", "--no-prefetcher"])
    _, collate_fn, mixup_fn = setup_mixup(args, model)
    assert collate_fn is None and type(mixup_fn) is Mixup  # timm's class itself, not a subclass
    assert mixup_fn.mixup_alpha == 0.8 and mixup_fn.label_smoothing == 0.1 and mixup_fn.num_classes == NUM_CLASSES
    assert not model.layer4._forward_hooks  # nothing is installed for timm's mixup

    # Same draws and the same output as the Mixup train.py builds itself.
    x, y = torch.randn(BATCH, 3, IMG, IMG), torch.arange(BATCH) % NUM_CLASSES
    np.random.seed(3)  # noqa: NPY002 (timm's Mixup draws from NumPy's global generator)
    out = mixup_fn(x.clone(), y)
    np.random.seed(3)  # noqa: NPY002
    ref = Mixup(**mixup_args_of(args))(x.clone(), y)
    torch.testing.assert_close(out[0], ref[0], rtol=0, atol=0)
    torch.testing.assert_close(out[1], ref[1], rtol=0, atol=0)


def test_method_name_builds_the_mixkit_method_with_hooks():
    args = parse(["--mixup", "AlignMixup", "--mixup-prob", "0.7", "--smoothing", "0.2"])
    assert isinstance(args.mixup, MixupMethod) and str(args.mixup) == "alignmixup"
    assert args.mixup > 0 and args.mixup == "alignmixup" and args.mixup != 1.0
    model = new_model()
    names = [name for name, _ in model.named_parameters()]
    state_keys = list(model.state_dict())

    mixup_active, collate_fn, mixup_fn = setup_mixup(args, model)  # prefetcher on (timm's default)
    assert mixup_active and collate_fn is None
    assert isinstance(mixup_fn, mixkit.AlignMixup)
    assert mixup_fn.mixup_alpha == 2.0  # the method's own alpha, not MixupMethod's float value
    assert mixup_fn.label_smoothing == 0.2 and mixup_fn.num_classes == NUM_CLASSES
    assert model.layer4._forward_hooks, "AlignMixup hooks layer4, the last feature stage"
    assert [name for name, _ in model.named_parameters()] == names  # hooks, no wrapper: names unchanged
    assert list(model.state_dict()) == state_keys

    # The checkpoint keeps a plain string, which timm's weights_only=True loading accepts.
    assert type(args.mixup) is str and args.mixup == "alignmixup"
    buffer = io.BytesIO()
    torch.save({"args": args}, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([argparse.Namespace]):
        assert torch.load(buffer, weights_only=True)["args"].mixup == "alignmixup"


def test_args_yaml_round_trip():
    # train.py dumps vars(args) with yaml.safe_dump right after parsing; `-c args.yaml` reads it back
    # through parser.set_defaults, whose string defaults go through --mixup's type again.
    text = yaml.safe_dump(vars(parse(["--mixup", "manifold"])))
    assert "mixup: manifold" in text
    parser = train_py_parser()
    parser.set_defaults(**yaml.safe_load(text))
    again = parser.parse_args([])
    assert isinstance(again.mixup, MixupMethod) and again.mixup.name == "manifold"
    parser.set_defaults(**yaml.safe_load(yaml.safe_dump(vars(parse(["--mixup", "0.8"])))))
    assert type(parser.parse_args([]).mixup) is float and parser.parse_args([]).mixup == 0.8


def test_input_space_preset_keeps_its_own_alphas():
    # timm passes cutmix_alpha=0.0 by default: the 'cutmix' preset must keep its CutMix alpha of 1.0.
    args = parse(["--mixup", "cutmix"])
    assert method_kwargs(mixup_args_of(args)).get("cutmix_alpha") is None
    _, _, mixup_fn = setup_mixup(args, new_model())
    assert isinstance(mixup_fn, mixkit.InputMixup)
    assert mixup_fn.cutmix_alpha == 1.0 and mixup_fn.mixup_alpha == 0.0


def test_bad_name_is_an_argparse_error_listing_the_methods(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_py_parser().parse_args(["--mixup", "alignmix"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --mixup" in err and "'alignmix'" in err
    for name in mixkit.list_mixups():
        assert name in err
    with pytest.raises(ValueError, match="neither a mixup alpha"):
        mixup_arg("alignmix")


def test_feature_method_with_cutmix_names_the_flag():
    args = parse(["--mixup", "alignmixup", "--cutmix", "1.0"])
    with pytest.raises(ValueError, match=r"--mixup alignmixup: .*cutmix"):
        setup_mixup(args, new_model())


def test_method_settings_need_a_method_name():
    with pytest.raises(ValueError, match="need a method name"):
        create_timm_mixup(new_model(), mixup_args_of(parse(["--mixup", "0.8"])), input_prob=0.5)


# --- the training loop --------------------------------------------------------------------------------------


def train_one_epoch(epoch, model, loader, optimizer, loss_fn, args, mixup_fn, ema, on_step):
    """train.py's train_one_epoch, cut to what touches mixing, with the patch's moved mixup call."""
    if args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
        if args.prefetcher and loader.mixup_enabled:
            loader.mixup_enabled = False
        elif mixup_fn is not None:
            mixup_fn.mixup_enabled = False
    model.train()
    for step, (input, target) in enumerate(loader):
        if not args.prefetcher:
            input, target = input.to(device="cpu"), target.to(device="cpu")
        batch = (input.clone(), target.clone())
        if mixup_fn is not None:
            input, target = mixup_fn(input, target)
        loss = loss_fn(model(input), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model, step=step)
        on_step(batch, target, loss)


def check_alignmixup_step(mixup_fn, seen, batch, target, smoothing, fired_before):
    """One step of AlignMixup against re-stated references; returns the hooks' fire count."""
    raw, labels = batch
    fired = mixup_fn.hooks.num_fired
    if not mixup_fn.mixup_enabled:  # --mixup-off-epoch: smoothed one-hots, input and features untouched
        assert not mixup_fn.last_draw.mixed and mixup_fn.last_draw.layer is None
        torch.testing.assert_close(target, mixup_target(labels, NUM_CLASSES, 1.0, smoothing))
        torch.testing.assert_close(seen["input"], raw, rtol=0, atol=0)
        assert fired == fired_before
        return fired
    lam_all = mixup_fn.last_draw.lam
    assert lam_all is not None and np.all(lam_all == lam_all[0])  # mode 'batch': one lam
    lam = float(lam_all[0])
    # Targets: timm's mixup_target, i.e. lam * y + (1 - lam) * y.flip(0), smoothed.
    torch.testing.assert_close(target, mixup_target(labels, NUM_CLASSES, lam, smoothing))
    if mixup_fn.last_draw.layer == "input":
        torch.testing.assert_close(seen["input"], lam * raw + (1 - lam) * raw.flip(0))
        assert fired == fired_before
    else:
        assert mixup_fn.last_draw.layer == "layer4"
        torch.testing.assert_close(seen["input"], raw, rtol=0, atol=0)  # the model got the batch as loaded
        assert fired == fired_before + 1
        a, mixed = seen["features"], seen["mixed"]
        assert not torch.allclose(mixed, a)
        # A barycentric projection under uniform marginals keeps each map's mean over positions, so the
        # aligned mix has the spatial means of plain mixup (up to the solver's marginal tolerance).
        expected = lam * a.mean((2, 3)) + (1 - lam) * a.flip(0).mean((2, 3))
        torch.testing.assert_close(mixed.mean((2, 3)), expected, rtol=0, atol=1e-2 * float(a.abs().max()))
    return fired


@pytest.mark.parametrize("prefetcher", [True, False], ids=["prefetcher", "no-prefetcher"])
@pytest.mark.parametrize(
    ("mixup", "settings"),
    [("alignmixup", {}), ("alignmixup", {"input_prob": 0.0}), ("0.8", {})],
    ids=["alignmixup", "alignmixup-features", "timm-0.8"],
)
def test_train_py_loop(image_root, prefetcher, mixup, settings):
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (the mixing methods draw from NumPy's global generator, as timm's)
    argv = ["--mixup", mixup, "--mixup-off-epoch", "1"] + ([] if prefetcher else ["--no-prefetcher"])
    args = parse(argv)
    model = new_model()
    seen: dict[str, torch.Tensor] = {}
    model.register_forward_pre_hook(lambda module, inputs: seen.__setitem__("input", inputs[0].detach().clone()))
    # Registered before mixkit's hook: sees layer4's own output; the one registered after sees the mix.
    model.layer4.register_forward_hook(lambda m, i, out: seen.__setitem__("features", out.detach().clone()))

    mixup_active, collate_fn, mixup_fn = setup_mixup(args, model, **settings)
    model.layer4.register_forward_hook(lambda m, i, out: seen.__setitem__("mixed", out.detach().clone()))
    loader = make_loader(image_root, args, collate_fn)
    assert mixup_active
    loss_fn = SoftTargetCrossEntropy()  # train.py's loss whenever mixup_active
    optimizer = create_optimizer_v2(model, "sgd", lr=0.05)
    ema = ModelEmaV3(model, decay=0.9)  # current train.py makes the EMA copy after the mixup setup
    before = [p.detach().clone() for p in model.parameters()]
    is_method = mixup != "0.8"
    if is_method:
        assert isinstance(mixup_fn, mixkit.AlignMixup) and collate_fn is None
    elif prefetcher:
        assert mixup_fn is None and isinstance(collate_fn, FastCollateMixup)
    else:
        assert type(mixup_fn) is Mixup and collate_fn is None
    state = {"fired": 0, "steps": 0, "feature_steps": 0}

    def on_step(batch, target, loss):
        assert torch.isfinite(loss)
        assert target.shape == (BATCH, NUM_CLASSES)
        torch.testing.assert_close(target.sum(1), torch.ones(BATCH))
        raw = batch[0]
        assert raw.dtype == torch.float32 and raw.min() < 0  # normalised before mixing, prefetcher or not
        state["steps"] += 1
        if is_method:
            state["fired"] = check_alignmixup_step(mixup_fn, seen, batch, target, args.smoothing, state["fired"])
            state["feature_steps"] += mixup_fn.last_draw.layer == "layer4"
        elif not (loader.mixup_enabled if prefetcher else mixup_fn.mixup_enabled):
            # timm's own switch-off: smoothed one-hots, whether the collate or Mixup made them.
            on = 1 - args.smoothing + args.smoothing / NUM_CLASSES
            torch.testing.assert_close(target.max(1).values, torch.full((BATCH,), on))

    for epoch in range(2):  # --mixup-off-epoch 1: epoch 0 mixes, epoch 1 does not
        train_one_epoch(epoch, model, loader, optimizer, loss_fn, args, mixup_fn, ema, on_step)
    assert state["steps"] == 2 * len(loader) == 8
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    if is_method:
        assert not mixup_fn.mixup_enabled
        assert state["fired"] == state["feature_steps"]
        if settings.get("input_prob") == 0.0:
            assert state["feature_steps"] == len(loader)  # every step of epoch 0 mixed at layer4
        # The EMA copy (made after the hooks) never consumes or performs a mix armed on the model.
        mixup_fn.mixup_enabled = True
        mixup_fn(torch.randn(BATCH, 3, IMG, IMG), torch.arange(BATCH) % NUM_CLASSES)
        if mixup_fn.last_draw.layer == "layer4":
            ema.module.train()
            ema.module(torch.randn(BATCH, 3, IMG, IMG))
            assert mixup_fn.hooks.armed == "layer4"
    else:
        assert (not loader.mixup_enabled) if prefetcher else (not mixup_fn.mixup_enabled)


# --- the patch of docs/timm_train_py.patch -----------------------------------------------------------------


def test_docs_show_the_patch_and_it_stays_small():
    patch = PATCH.read_text()
    assert f"```diff\n{patch}```" in DOC.read_text(), "docs/timm_train_py.md must show the .patch verbatim"
    assert patch.startswith("--- a/train.py\n+++ b/train.py\n")
    added = [line for line in patch.splitlines() if line.startswith("+") and not line.startswith("+++")]
    removed = [line for line in patch.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert len(added) <= 6 and len(removed) <= 6
    used = set(re.findall(r"mixkit\.timm_compat\.(\w+)", patch))
    assert used == {"mixup_arg", "is_mixup_method", "create_timm_mixup"}
    import mixkit.timm_compat as timm_compat

    assert all(callable(getattr(timm_compat, name)) for name in used)
    # Methods with parts: two more lines, shown verbatim, and the README names both.
    parts = PARTS_PATCH.read_text()
    assert f"```diff\n{parts}```" in DOC.read_text()
    added = [line[1:].strip() for line in parts.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert len(added) == 2 and not [line for line in parts.splitlines()[2:] if line.startswith("-")]
    assert set(re.findall(r"mixkit\.timm_compat\.(\w+)", parts)) == {"attach_parts", "extra_loss"}
    readme = (ROOT / "README.md").read_text()
    assert all(line in readme for line in added)


@pytest.mark.slow
def test_patch_applies_and_trains_upstream_train_py(image_root, tmp_path):
    """Needs a copy of upstream train.py (never stored in this project) and a matching timm."""
    source = os.environ.get("MIXKIT_TIMM_TRAIN_PY")
    if not source or not Path(source).is_file():
        pytest.skip("set MIXKIT_TIMM_TRAIN_PY to a copy of upstream timm train.py to run it (CI has no internet)")
    if shutil.which("patch") is None:
        pytest.skip("the patch program is not installed")
    shutil.copy(source, tmp_path / "train.py")
    applied = subprocess.run(["patch", "-p1", "--forward"], input=PATCH.read_text(), cwd=tmp_path,
                             capture_output=True, text=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "offset" not in applied.stdout and "fuzz" not in applied.stdout, applied.stdout
    for flags in ([], ["--no-prefetcher"]):
        run = subprocess.run(
            [sys.executable, "train.py", "--data-dir", str(image_root), "--val-split", "train", "--device", "cpu",
             "--model", MODEL, "--num-classes", str(NUM_CLASSES), "--img-size", str(IMG), "-b", str(BATCH),
             "--epochs", "1", "--workers", "0", "--mixup", "alignmixup", "--output", str(tmp_path / "out"),
             "--experiment", "run" + "".join(flags), "--opt", "sgd", "--lr", "0.01", *flags],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "criterion=SoftTargetCrossEntropy" in run.stdout + run.stderr
        run_dir = tmp_path / "out" / ("run" + "".join(flags))
        assert "mixup: alignmixup" in (run_dir / "args.yaml").read_text()
        assert (run_dir / "last.pth.tar").is_file()
    # The two more lines for methods with parts (docs/timm_train_py_parts.patch), with tests/parts_probe.py's
    # method registered before train.py parses its flags; then a resume from the checkpoint it wrote.
    applied = subprocess.run(["patch", "-p1", "--forward"], input=PARTS_PATCH.read_text(), cwd=tmp_path,
                             capture_output=True, text=True)
    assert applied.returncode == 0 and "offset" not in applied.stdout, applied.stdout + applied.stderr
    launcher = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); from parts_probe import ProbeMixup; "
                "from mixkit.mix import register_mixup; register_mixup('probe', ProbeMixup, prob=0.5); "
                "sys.argv[0] = 'train.py'; runpy.run_path('train.py', run_name='__main__')")
    common = ["--data-dir", str(image_root), "--val-split", "train", "--device", "cpu", "--model", MODEL,
              "--num-classes", str(NUM_CLASSES), "--img-size", str(IMG), "-b", str(BATCH), "--workers", "0",
              "--mixup", "probe", "--no-prefetcher", "--output", str(tmp_path / "out"), "--opt", "sgd", "--lr", "0.01"]
    for extra in (["--epochs", "1", "--experiment", "parts"],
                  ["--epochs", "2", "--experiment", "parts-resumed", "--resume",
                   str(tmp_path / "out" / "parts" / "last.pth.tar")]):
        run = subprocess.run([sys.executable, "-c", launcher, str(ROOT / "tests"), *common, *extra], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    first = torch.load(tmp_path / "out" / "parts" / "last.pth.tar", map_location="cpu", weights_only=False)
    second = torch.load(tmp_path / "out" / "parts-resumed" / "last.pth.tar", map_location="cpu", weights_only=False)
    assert set(first["state_dict"]) == set(new_model().state_dict())  # the classifier only
    probe_first, probe_second = first["optimizer"]["mixkit_parts"]["probe"], second["optimizer"]["mixkit_parts"]["probe"]
    assert not torch.equal(probe_first["weight"], probe_second["weight"])  # trained on from the restored probe
    # AlignMixup/AE through the same two lines: its decoder is saved with the optimizer, beside the classifier.
    ae = [arg if arg != "probe" else "alignmixup_ae" for arg in common]
    run = subprocess.run([sys.executable, "train.py", *ae, "--epochs", "1", "--experiment", "ae"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    saved = torch.load(tmp_path / "out" / "ae" / "last.pth.tar", map_location="cpu", weights_only=False)
    assert set(saved["state_dict"]) == set(new_model().state_dict())
    assert set(saved["optimizer"]["mixkit_parts"]) == {"decoder"}


@pytest.mark.parametrize("name", [n for n in list_mixups() if not get_mixup_class(n).supports_cutmix])
def test_cutmix_with_a_method_that_does_not_cut_is_one_error_on_both_paths(name):
    """mixkit-train and users' train.py map --mixup to a mixer by one path, so the same mistake gives the
    same message on both (alignmixup_paper was missing from mixkit-train's own list)."""
    from mixkit.train import parse_args, validate_args

    with pytest.raises(ValueError) as ours:
        validate_args(parse_args(["--mixup", name, "--cutmix", "1.0"]))
    model = timm.create_model("resnet18", num_classes=10)
    mixup_args = dict(mixup_alpha=mixup_arg(name), cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                      mode="batch", label_smoothing=0.1, num_classes=10)
    with pytest.raises(ValueError) as theirs:
        create_timm_mixup(model, mixup_args)
    assert str(ours.value) == str(theirs.value)
    assert str(ours.value).startswith(f"--mixup {name}: ") and "--cutmix 0" in str(ours.value)
    assert not any(m._forward_hooks for m in model.modules())  # refused before any hook is attached


def test_a_method_with_parts_takes_two_more_lines_of_train_py(image_root, tmp_path):
    """The two lines the README adds for methods with parts: attach_parts after create_optimizer_v2 (train.py
    builds mixup_fn before it; the scheduler and resume_checkpoint then cover the parts) and extra_loss in the
    loss; timm's own CheckpointSaver and resume_checkpoint save and restore the parts beside the state_dict."""
    from parts_probe import registered
    from timm.models import resume_checkpoint
    from timm.scheduler import create_scheduler_v2
    from timm.utils import CheckpointSaver

    from mixkit.timm_compat import attach_parts, extra_loss

    with registered():
        args = parse(["--mixup", "probe", "--no-prefetcher"])
        args.model = MODEL  # CheckpointSaver records it
        torch.manual_seed(0)
        model = new_model()
        _, collate_fn, mixup_fn = setup_mixup(args, model)
        optimizer = create_optimizer_v2(model, "sgd", lr=0.05, weight_decay=1e-4)
        attach_parts(mixup_fn, optimizer)  # added line 1
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=2, warmup_epochs=1)
        probe = mixup_fn.extra_modules()["probe"]
        grouped = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
        assert grouped[id(probe.weight)] == 1e-4 and grouped[id(probe.bias)] == 0.0  # timm's decay split
        assert len(scheduler.base_values) == len(optimizer.param_groups)  # the schedule covers the parts
        before = {k: v.clone() for k, v in probe.state_dict().items()}
        loader = make_loader(image_root, args, collate_fn)
        np.random.seed(0)  # noqa: NPY002
        model.train()
        for input, target in loader:
            input, target = mixup_fn(input, target)
            loss = SoftTargetCrossEntropy()(model(input), target)
            loss = loss + extra_loss(mixup_fn)  # added line 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        trained = {k: v.clone() for k, v in probe.state_dict().items()}
        assert any(not torch.equal(before[k], trained[k]) for k in before)
        saver = CheckpointSaver(model=model, optimizer=optimizer, args=args, checkpoint_dir=str(tmp_path),
                                recovery_dir=str(tmp_path), max_history=1)
        saver.save_checkpoint(epoch=0, metric=1.0)
        checkpoint = torch.load(tmp_path / "checkpoint-0.pth.tar", map_location="cpu", weights_only=False)
        assert set(checkpoint["state_dict"]) == set(model.state_dict())  # the classifier only
        assert set(checkpoint["optimizer"]["mixkit_parts"]) == {"probe"}
        mixup_fn.remove()

        torch.manual_seed(1)
        resumed = new_model()
        _, _, restored = setup_mixup(parse(["--mixup", "probe", "--no-prefetcher"]), resumed)
        resumed_optimizer = create_optimizer_v2(resumed, "sgd", lr=0.05, weight_decay=1e-4)
        attach_parts(restored, resumed_optimizer)
        resume_checkpoint(resumed, str(tmp_path / "checkpoint-0.pth.tar"), optimizer=resumed_optimizer)
        for key, value in restored.extra_modules()["probe"].state_dict().items():
            assert torch.equal(value, trained[key]), key
        restored.remove()
        # A checkpoint written without the parts cannot silently resume a method that has them.
        plain = create_optimizer_v2(new_model(), "sgd", lr=0.05)
        _, _, fresh = setup_mixup(parse(["--mixup", "probe", "--no-prefetcher"]), new_model())
        optimizer = create_optimizer_v2(fresh.model, "sgd", lr=0.05)
        attach_parts(fresh, optimizer)
        with pytest.raises(ValueError, match="mixkit_parts"):
            optimizer.load_state_dict(plain.state_dict())
        fresh.remove()
    assert extra_loss(None) == 0.0 and extra_loss(Mixup()) == 0.0
    attach_parts(None, plain)  # a no-op without parts
