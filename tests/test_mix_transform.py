"""mixkit.mix.BatchMix: mixkit's input methods as a torchvision.transforms.v2 transform and a collate_fn."""

import numpy as np
import pytest
import torch
from timm.data import Mixup
from torch.utils.data import DataLoader, TensorDataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

from mixkit.mix import BatchMix, get_mixup_class, list_mixups, mixup_preset

K = 5


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, K, (n,), generator=g)


def timm_reference(x, y, **kwargs):
    """timm's Mixup on a copy, as the independent reference (it mixes in place)."""
    return Mixup(num_classes=K, **kwargs)(x.clone(), y)


@pytest.mark.parametrize("method,kwargs", [
    ("mixup", dict(mixup_alpha=1.0, cutmix_alpha=0.0)),
    ("cutmix", dict(mixup_alpha=0.0, cutmix_alpha=1.0)),
    ("mixup_cutmix", dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, mode="elem")),
])
def test_matches_timm_under_one_seed_and_leaves_the_input_alone(method, kwargs):
    x, y = batch()
    before = x.clone()
    np.random.seed(3)  # noqa: NPY002  (timm draws from NumPy's global generator)
    mixed, soft = BatchMix(method, num_classes=K, **kwargs)(x, y)
    np.random.seed(3)  # noqa: NPY002  (timm draws from NumPy's global generator)
    ref_x, ref_y = timm_reference(x, y, **kwargs)
    assert torch.equal(mixed, ref_x) and torch.equal(soft, ref_y)
    assert torch.equal(x, before)  # v2 transforms do not modify their input
    assert not torch.equal(mixed, before)


def test_as_a_collate_fn_mixes_each_batch_like_the_transform_on_the_collated_batch():
    x, y = batch(12)
    mix = BatchMix("mixup", num_classes=K, mixup_alpha=1.0)
    loader = DataLoader(TensorDataset(x, y), batch_size=6, collate_fn=mix.collate)
    np.random.seed(0)  # noqa: NPY002  (timm draws from NumPy's global generator)
    got = list(loader)
    np.random.seed(0)  # noqa: NPY002  (timm draws from NumPy's global generator)
    expected = [mix(*default_collate(list(zip(x[i:i + 6], y[i:i + 6], strict=True)))) for i in (0, 6)]
    for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
        assert gx.shape == (6, 3, 16, 16) and gy.shape == (6, K)
        assert torch.equal(gx, ex) and torch.equal(gy, ey)
        assert torch.allclose(gy.sum(1), torch.ones(6))


def test_in_a_v2_pipeline_keeps_tv_tensors_and_the_input_structure():
    x, y = batch()
    images = tv_tensors.Image((x * 255).to(torch.uint8))
    pipeline = v2.Compose([v2.ToDtype(torch.float32, scale=True), BatchMix("cutmix", num_classes=K)])
    np.random.seed(0)  # noqa: NPY002  (timm draws from NumPy's global generator)
    out = pipeline({"image": images, "label": y, "id": "batch-0"})
    assert set(out) == {"image", "label", "id"} and out["id"] == "batch-0"
    assert isinstance(out["image"], tv_tensors.Image) and out["image"].dtype == torch.float32
    assert out["label"].shape == (8, K)
    # CutMix pastes pixels: every output pixel is the sample's own or its flip partner's.
    scaled = v2.ToDtype(torch.float32, scale=True)(images).as_subclass(torch.Tensor)
    own, partner = out["image"] == scaled, out["image"] == scaled.flip(0)
    assert bool((own | partner).all()) and bool(partner[~own].any())


@pytest.mark.parametrize("name", list_mixups())
def test_every_registered_method_works_on_a_batch_or_is_refused_with_the_fix(name):
    """Registry-driven: a method that needs the model is refused; every other one mixes a batch."""
    x, y = batch()
    if get_mixup_class(name).needs_model:
        with pytest.raises(ValueError, match="training step"):
            BatchMix(name, num_classes=K)
        return
    kwargs = {} if mixup_preset(name) else {"mixup_alpha": 1.0}
    mixed, soft = BatchMix(name, num_classes=K, **kwargs)(x, y)
    assert mixed.shape == x.shape and soft.shape == (8, K)


def test_bad_inputs_name_the_problem():
    mix = BatchMix("mixup", num_classes=K)
    x, y = batch()
    with pytest.raises(ValueError, match="labels"):
        mix(x, y.float())
    with pytest.raises(ValueError, match="images"):
        mix(x[0], y)
    with pytest.raises(ValueError, match="8 images but 4 labels"):
        mix(x, y[:4])
