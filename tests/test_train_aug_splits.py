"""timm's --aug-splits / --jsd-loss / --split-bn / --resplit: timm's pieces where they work, clear refusals elsewhere."""
from __future__ import annotations

import pytest
import torch
from timm.data.loader import fast_collate
from train_fixtures import load_weights, make_image_folder, tiny_args, train_in_process

from mixkit.data import create_loader
from mixkit.data.aug_splits import SplitCollate
from mixkit.train import parse_args, validate_args
from mixkit.train.setup import create_train_loss


def test_split_collate_lays_out_batches_as_timms_fast_collate():
    g = torch.Generator().manual_seed(0)
    batch = [(tuple(torch.randint(0, 255, (3, 4, 4), generator=g, dtype=torch.uint8) for _ in range(3)), label)
             for label in (2, 0, 1, 1)]
    ours_x, ours_y = SplitCollate(3)(batch)
    timm_x, timm_y = fast_collate([(tuple(v.numpy() for v in views), label) for views, label in batch])
    assert torch.equal(ours_x, timm_x) and torch.equal(ours_y, timm_y)
    assert ours_y.tolist() == [2, 0, 1, 1] * 3


@pytest.mark.parametrize("re_split", [False, True])
def test_torch_loader_yields_the_splits_and_resplit_spares_the_clean_one(tmp_path, re_split):
    data = make_image_folder(tmp_path, classes=2, train_per_class=4, val_per_class=1)
    # Constant erasing writes exact zeros, which no un-erased normalised pixel is: (p/255 - 0.485)/0.229 != 0.
    loader = create_loader("torch", data / "train", batch_size=4, is_training=True, img_size=16, num_workers=0,
                           device="cpu", rank=0, world_size=1, aug_splits=3, re_split=re_split,
                           augment=dict(re_prob=1.0, re_mode="const"))
    x, y = next(iter(loader))
    assert x.shape == (12, 3, 16, 16) and torch.equal(y[:4].repeat(3), y)
    erased = [(x[k * 4:(k + 1) * 4] == 0).flatten(1).any(1).all().item() for k in range(3)]
    assert erased == ([False, True, True] if re_split else [True, True, True])


def test_other_backends_refuse_aug_splits():
    images, labels = torch.zeros(8, 1, 8, 8, dtype=torch.uint8), torch.zeros(8, dtype=torch.int64)
    with pytest.raises(ValueError, match="'memory' loader cannot make timm's augmentation splits.*--loader torch"):
        create_loader("memory", (images, labels), batch_size=4, is_training=True, img_size=8, mean=(0.5,),
                      std=(0.5,), device="cpu", rank=0, world_size=1, aug_splits=2)


def test_jsd_loss_is_timms_over_the_splits():
    from timm.loss import JsdCrossEntropy

    args = parse_args(["--aug-splits", "3", "--jsd-loss", "--smoothing", "0.2"])
    validate_args(args)
    loss = create_train_loss(args, mixing=False)
    assert isinstance(loss, JsdCrossEntropy) and loss.num_splits == 3 and loss.cross_entropy_loss.smoothing == 0.2
    # timm's definition: CE of the clean split plus 12 x the JS divergence of the three splits' softmaxes.
    logits, target = torch.randn(6, 5), torch.tensor([1, 3, 1, 3, 1, 3])
    p = [t.softmax(1) for t in logits.split(2)]
    m = torch.stack(p).mean(0).clamp(1e-7, 1).log()
    js = sum(torch.nn.functional.kl_div(m, pi, reduction="batchmean") for pi in p) / 3
    ce = torch.nn.functional.cross_entropy(logits[:2], target[:2], label_smoothing=0.2)
    assert float(loss(logits, target)) == pytest.approx(float(ce + 12 * js), rel=1e-5)


@pytest.mark.parametrize("flags,match", [
    (["--aug-splits", "3", "--mixup", "0.8"], "does not combine with mixing"),
    (["--aug-splits", "3", "--mixup", "alignmixup"], "does not combine with mixing"),
    (["--aug-splits", "2", "--cutmix", "1.0"], "does not combine with mixing"),
    (["--aug-splits", "1"], "0 \\(off\\) or >= 2"),
    (["--jsd-loss"], "--jsd-loss compares the augmentation splits"),
    (["--aug-splits", "3", "--jsd-loss", "--bce-loss"], "choose one"),
    (["--split-bn"], "--split-bn keeps BatchNorm statistics per augmentation split"),
    (["--aug-splits", "2", "--split-bn", "--sync-bn"], "exclude each other"),
    (["--resplit", "--reprob", "0.25"], "--resplit spares the clean augmentation split"),
    (["--aug-splits", "2", "--resplit"], "random erasing, which is off"),
])
def test_refusals(flags, match):
    with pytest.raises(ValueError, match=match):
        validate_args(parse_args(flags))


@pytest.mark.slow
def test_augmix_recipe_trains_and_exports_plain_weights(tmp_path):
    """timm's AugMix recipe end to end; --split-bn's extra statistics stay in the checkpoints (resume), out of
    the exported weights (which load into the plain timm model)."""
    from mixkit.rundir import create_model_from_run

    data = make_image_folder(tmp_path / "data", classes=3, train_per_class=4, val_per_class=2)
    summary = train_in_process(tiny_args(data, tmp_path, "--aug-splits", "3", "--jsd-loss", "--split-bn", "--aa",
                                         "augmix-m5-w4-d2", "--reprob", "0.25", "--resplit"))
    run = tmp_path / "run"
    assert summary["complete"] and summary["final"]["eval_top1"] is not None
    in_ckpt = load_weights(run / "checkpoints" / "epoch0001-batch000000" / "model.safetensors")
    exported = load_weights(run / "model.safetensors")
    assert any(".aux_bn." in k for k in in_ckpt) and not any(".aux_bn." in k for k in exported)
    assert all(torch.equal(in_ckpt[k], v) for k, v in exported.items())
    create_model_from_run(run)  # strict load into timm's model without split BatchNorm
