"""One-epoch CPU runs of mixkit-train per mixing method; the run directory; bad input before training."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from train_fixtures import make_image_folder, tiny_args, train_in_process

from mixkit.data import create_loader
from mixkit.mix import get_mixup_class, list_mixups
from mixkit.mix.factory import accepted_arguments
from mixkit.rundir import create_model_from_run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"))


def _method_flags(name: str) -> list[str]:
    # Methods with an input-mixup branch (AlignMixup's input_prob) take their feature branch every batch.
    forced = "input_prob" in accepted_arguments(get_mixup_class(name))
    return ["--mixup", name, *(["--mixup-kwargs", "input_prob=0.0"] if forced else [])]


# No mixing, timm's own Mixup for a number, and every registered method by name.
METHODS = {"none": [], "timm-mixup-0.8": ["--mixup", "0.8"], **{name: _method_flags(name) for name in list_mixups()}}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_one_epoch_run_per_method(data, tmp_path, method):
    summary = train_in_process(tiny_args(data, tmp_path, *METHODS[method], "--model-ema"))
    run = tmp_path / "run"
    final = summary["final"]
    assert math.isfinite(final["train_loss"]) and math.isfinite(final["eval_loss"])
    assert summary["eval_samples"] == 12  # 4 classes x 3 validation images, each once
    rows = (run / "summary.csv").read_text().splitlines()
    extra = getattr(get_mixup_class(method), "extra_loss_name", None) if method in list_mixups() else None
    # timm's columns, and a method's extra loss (alignmixup_ae's recon_loss) after train_loss.
    assert rows[0] == f"epoch,train_loss,{extra + ',' if extra else ''}eval_loss,eval_top1,eval_top5,lr"
    assert len(rows) == 2
    assert json.loads((run / "summary.json").read_text())["complete"] is True
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert (args["model"], args["num_classes"], args["in_chans"], args["img_size"]) == \
        ("preact_resnet_tiny_cifar", 4, 3, 16)
    assert args["model_kwargs"] == {"base_width": 8} and len(args["mean"]) == 3 and args["val_split"] == "val"
    # The weights load back through the run-directory contract and reproduce the run's evaluation top-5.
    model, _ = create_model_from_run(run)
    ema, _ = create_model_from_run(run, ema=True)
    assert sum(p.numel() for p in ema.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 16, 16))).all()


@pytest.mark.parametrize("extra, error, match", [
    (["--data-dir", "/nonexistent/data"], FileNotFoundError, "does not exist"),
    (["--val-split", "test"], FileNotFoundError, "--val-split"),
    (["--model", "resnet_doesnotexist"], ValueError, "unknown --model"),
    (["--loader", "nope"], ValueError, "unknown --loader"),
    (["--opt", "sgdx"], ValueError, "unknown --opt"),
    (["--mixup", "alignmixup", "--cutmix", "1.0"], ValueError, "--cutmix"),
    (["--mixup", "alignmixup", "--mixup-kwargs", "not_an_option=3"], ValueError, "not_an_option"),
    (["--mixup", "alignmixup", "--mixup-kwargs", "layers=['head.nothing']"], ValueError, "head.nothing"),
    (["--sched", "cosin"], ValueError, "unknown --sched 'cosin': .*cosine, tanh, step"),
    (["--loader", "memory"], ValueError, "Python-only backend"),
    (["--mixup", "-0.5"], ValueError, "alphas must be >= 0"),
    (["--cutmix", "-1"], ValueError, "alphas must be >= 0"),
    (["--img-size", "1"], ValueError, "smaller than preact_resnet_tiny_cifar's total stride 8"),
])
def test_bad_input_fails_before_training(data, tmp_path, extra, error, match):
    argv = tiny_args(data, tmp_path) + extra  # later flags win
    with pytest.raises(error, match=match):
        train_in_process(argv)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_imagefolder_without_train_split(tmp_path):
    (tmp_path / "d" / "val" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="--train-split"):
        train_in_process(tiny_args(tmp_path / "d", tmp_path))


def _reference_shift(img, dy, dx, p):
    # Independent restatement: zero-pad by p, then crop the window starting at (dy, dx).
    padded = torch.nn.functional.pad(img, (p, p, p, p))
    return padded[:, dy:dy + img.shape[-2], dx:dx + img.shape[-1]]


def test_memory_loader_contract():
    images = torch.randint(0, 256, (50, 12, 12), dtype=torch.uint8)
    labels = torch.arange(50) % 10
    kw = dict(batch_size=8, img_size=12, device="cpu", mean=(0.5,), std=(0.25,), seed=3)
    # Evaluation: every sample exactly once across 3 ranks, normalised as (x/255 - mean) / std.
    seen = []
    for r in range(3):
        ld = create_loader("memory", (images, labels), is_training=False, rank=r, world_size=3, **kw)
        for x, y in ld:
            seen += y.tolist()
            assert x.shape[1:] == (1, 12, 12)
        idx = torch.as_tensor(ld.indices)
        first = next(iter(ld))[0]
        ref = (images[idx[:8]].float() / 255 - 0.5) / 0.25
        assert torch.allclose(first[:, 0], ref, atol=1e-6)
    assert sorted(seen) == sorted(labels.tolist())
    # Training: disjoint equal shards, epochs reproducible through set_epoch and different from each other.
    shards = [set(create_loader("memory", (images, labels), is_training=True, rank=r, world_size=3, **kw).indices.tolist())
              for r in range(3)]
    assert all(not (a & b) for i, a in enumerate(shards) for b in shards[i + 1:])
    ld = create_loader("memory", (images, labels), is_training=True, rank=0, world_size=1, **kw)
    ld.set_epoch(4)
    a = [x for x, _ in ld]
    ld.set_epoch(4)
    b = [x for x, _ in ld]
    c = [x for x, _ in ld]  # epoch 5
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)) and not torch.equal(a[0], c[0])
    # Each augmented image is a zero-padded shift of its source, possibly mirrored.
    ld.set_epoch(0)
    x, y = next(iter(ld))
    gen_imgs = x[:, 0] * 0.25 + 0.5
    for k in range(len(y)):
        candidates = [images[i].float() / 255 for i in range(50) if labels[i] == y[k]]
        p = ld.pad
        ok = any(torch.allclose(gen_imgs[k], t, atol=1e-5)
                 for src in candidates for flip in (False, True)
                 for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 for t in [_reference_shift((src.flip(-1) if flip else src)[None], dy, dx, p)[0]])
        assert ok, k
