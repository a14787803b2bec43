"""timm train.py's augmentation, loss and model flags in mixkit-train, against timm as the reference."""
from __future__ import annotations

import argparse
import random

import pytest
import timm
import torch
from timm.data import create_transform
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

from mixkit.data import create_loader
from mixkit.data.augment import check_augment_supported
from mixkit.train.args import parse_args
from mixkit.train.data import timm_augment
from mixkit.train.setup import check_grad_checkpointing, convert_sync_bn, create_train_loss, validate_args

FLAGS = ["--aa", "rand-m9-mstd0.5", "--reprob", "0.25", "--remode", "pixel", "--recount", "2",
         "--color-jitter", "0.3", "--grayscale-prob", "0.1"]


def test_torch_loader_transform_equals_timm_create_transform(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 40), (i * 50, 100, 30)).save(tmp_path / c / f"{i}.png")
    args = parse_args(["--data-dir", str(tmp_path), *FLAGS])
    loader = create_loader("torch", tmp_path, batch_size=2, is_training=True, img_size=32, num_workers=0,
                           device="cpu", augment=timm_augment(args))
    ref = create_transform(32, is_training=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                           interpolation="bilinear", auto_augment="rand-m9-mstd0.5", re_prob=0.25, re_mode="pixel",
                           re_count=2, color_jitter=0.3, grayscale_prob=0.1)
    ours = loader.dataset.transform
    # The crop is mixkit's non-empty subclass of timm's (torchvision's draws); every later transform is timm's.
    assert isinstance(ours.transforms[0], type(ref.transforms[0]))
    assert repr(ours.transforms[1:]) == repr(ref.transforms[1:])
    from torchvision.transforms import Compose

    img = Image.new("RGB", (32, 32), (200, 10, 90))
    torch.manual_seed(0)
    random.seed(0)
    a = Compose(ours.transforms[1:])(img)
    torch.manual_seed(0)
    random.seed(0)
    b = Compose(ref.transforms[1:])(img)
    assert torch.equal(a, b)


def test_backends_that_are_not_timm_refuse_augment():
    with pytest.raises(ValueError, match="'ffcv' loader cannot apply.*--aa.*--loader torch"):
        check_augment_supported("ffcv", {"auto_augment": "rand-m9"})
    images = torch.zeros(4, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="'memory' loader cannot apply.*--reprob"):
        create_loader("memory", (images, torch.zeros(4, dtype=torch.int64)), batch_size=2, is_training=True,
                      img_size=8, device="cpu", mean=(0.5,), std=(0.5,), augment={"re_prob": 0.5})
    # Off values are no augmentation: nothing to refuse.
    create_loader("memory", (images, torch.zeros(4, dtype=torch.int64)), batch_size=2, is_training=True,
                  img_size=8, device="cpu", mean=(0.5,), std=(0.5,), augment=timm_augment(parse_args([])))


@pytest.mark.parametrize("mixing", [True, False])
def test_bce_loss_is_timms(mixing):
    args = parse_args(["--bce-loss", "--bce-target-thresh", "0.2", "--bce-pos-weight", "2.0", "--bce-sum"])
    fn = create_train_loss(args, mixing=mixing)
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    if mixing:
        target = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), -1)
        ref = BinaryCrossEntropy(target_threshold=0.2, sum_classes=True, pos_weight=2.0)
    else:
        target = torch.tensor([0, 1, 2, 3, 4, 0])
        ref = BinaryCrossEntropy(smoothing=0.1, target_threshold=0.2, sum_classes=True, pos_weight=2.0)
    assert torch.allclose(fn(logits, target), ref(logits, target))
    assert isinstance(create_train_loss(parse_args([]), mixing=True), SoftTargetCrossEntropy)


def test_bce_options_without_bce_loss_refused():
    with pytest.raises(ValueError, match="--bce-target-thresh applies to --bce-loss"):
        validate_args(parse_args(["--bce-target-thresh", "0.2"]))


def test_drop_path_reaches_the_model_and_preact_refuses():
    from mixkit.train.setup import _create_model

    args = parse_args(["--model", "resnet18", "--drop-path", "0.2", "--drop", "0.3"])
    model = _create_model(args, 10, 3)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)  # timm's linear ramp ends at the rate
    assert model.drop_rate == 0.3
    with pytest.raises(ValueError, match="PreActResNet has no drop-path"):
        _create_model(parse_args(["--model", "preact_resnet_tiny_cifar", "--drop-path", "0.1"]), 10, 3)


def test_sync_bn_converts_on_several_processes_only():
    args = argparse.Namespace(sync_bn=True)
    model = timm.create_model("resnet18", num_classes=3)
    assert convert_sync_bn(args, model, 1) is model
    converted = convert_sync_bn(args, timm.create_model("resnet18", num_classes=3), 2)
    kinds = {type(m).__name__ for m in converted.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds


def test_grad_checkpointing_refused_with_a_hooking_method():
    from mixkit.train.setup import _create_model, build_mixup

    args = parse_args(["--model", "resnet18", "--grad-checkpointing", "--mixup", "manifold"])
    model = _create_model(args, 10, 3)
    assert model.grad_checkpointing
    build_mixup(args, model, 10)
    with pytest.raises(ValueError, match="--grad-checkpointing with --mixup manifold.*Drop"):
        check_grad_checkpointing(args, model)
    check_grad_checkpointing(parse_args(["--grad-checkpointing", "--mixup", "0.2"]),
                             timm.create_model("resnet18", num_classes=10))


def test_end_to_end_run_with_timm_flags(tmp_path):
    import yaml

    from tests.train_fixtures import make_image_folder, tiny_args, train_in_process

    data = make_image_folder(tmp_path / "data")
    summary = train_in_process(tiny_args(data, tmp_path / "out", "--aa", "rand-m9-mstd0.5", "--reprob", "0.25",
                                         "--color-jitter", "0.3", "--bce-loss", "--bce-target-thresh", "0.2",
                                         "--mixup", "0.2"))
    assert summary["complete"]
    saved = yaml.safe_load((tmp_path / "out" / "run" / "args.yaml").read_text())
    assert saved["aa"] == "rand-m9-mstd0.5" and saved["reprob"] == 0.25 and saved["bce_loss"] is True
