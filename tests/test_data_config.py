"""The loaders' shared options (``LoaderConfig``), declared and validated once, and the backend registry."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from data_fixtures import make_colour_folder, run_epoch
from timm.data import IMAGENET_DEFAULT_MEAN

import mixkit.data
from mixkit.data import LoaderBase, LoaderConfig, create_loader, list_backends, register_backend
from mixkit.data.torch_loader import TorchLoader


@pytest.mark.parametrize("field,value,error,match", [
    ("batch_size", 0, ValueError, "batch_size must be >= 1"),
    ("batch_size", 2.0, TypeError, "batch_size must be an int"),
    ("batch_size", True, TypeError, "batch_size must be an int"),
    ("img_size", 0, ValueError, "img_size must be >= 1"),
    ("num_workers", -1, ValueError, "num_workers must be >= 0"),
    ("seed", -3, ValueError, "seed must be >= 0"),
    ("crop_pct", 0.0, ValueError, r"crop_pct must be in \(0, 1\]"),
    ("crop_pct", 1.5, ValueError, r"crop_pct must be in \(0, 1\]"),
    ("hflip", 1.2, ValueError, "hflip is a probability"),
    ("mean", (0.5, 0.5), ValueError, "mean must be 1 or 3 numbers"),
    ("std", (0.5,), ValueError, "std must be 3 numbers"),  # as many as mean's
    ("std", (0.2, 0.0, 0.2), ValueError, "std must be > 0"),
    ("scale", (0.5, 0.1), ValueError, "scale is an area range"),
    ("scale", (0.1, 1.5), ValueError, "scale is an area range"),
    ("ratio", (0.0, 1.0), ValueError, "ratio is an aspect-ratio range"),
    ("rank", 2, ValueError, "rank 2 and world_size 1"),
    ("world_size", 0, ValueError, "need world_size >= 1"),
    ("rank", "0", TypeError, "rank must be an int"),
])
def test_config_rejects_bad_values_naming_them(field, value, error, match):
    kwargs = {"batch_size": 4, "is_training": True, field: value}
    with pytest.raises(error, match=match):
        LoaderConfig(**kwargs)


def test_config_resolves_and_is_frozen(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    train = LoaderConfig(batch_size=4, is_training=True, device="cpu")
    assert (train.rank, train.world_size, train.drop_last) == (1, 3, True)
    assert train.device == torch.device("cpu") and train.mean == tuple(IMAGENET_DEFAULT_MEAN)
    evaluation = LoaderConfig(batch_size=4, is_training=False, rank=0, world_size=1, device="cpu")
    assert (evaluation.rank, evaluation.world_size, evaluation.drop_last) == (0, 1, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.batch_size = 8
    with pytest.raises(TypeError):
        LoaderConfig(4, True)  # keyword-only
    assert dataclasses.replace(train, batch_size=8) == \
        LoaderConfig(batch_size=8, is_training=True, device="cpu")


def test_options_are_declared_once():
    """Backends take (source, config, own options): no shared option is declared again."""
    shared = {f.name for f in dataclasses.fields(LoaderConfig)}
    from mixkit.data.memory_loader import MemoryLoader

    classes = [TorchLoader, MemoryLoader]
    for name in ("ffcv_loader", "dali_loader"):
        try:
            module = __import__(f"mixkit.data.{name}", fromlist=["x"])
        except ImportError:
            continue
        classes += [getattr(module, c) for c in ("FfcvLoader", "DaliLoader") if hasattr(module, c)]
    for cls in classes:
        params = list(inspect.signature(cls.__init__).parameters)
        assert params[2] == "config" and not shared & set(params), f"{cls.__name__}: {params}"
    assert not shared & set(inspect.signature(create_loader).parameters)


def test_config_or_keywords_give_the_same_loader(tmp_path):
    colour = make_colour_folder(tmp_path / "f", (3, 2))
    kw = dict(batch_size=2, is_training=False, img_size=16, device="cpu", num_workers=0)
    by_keywords = create_loader("torch", colour.root, **kw)
    config = LoaderConfig(**kw)
    by_config = create_loader("torch", colour.root, config)
    assert by_keywords.config == by_config.config == config
    assert run_epoch(by_keywords)[:2] == run_epoch(by_config)[:2]
    overridden = create_loader("torch", colour.root, config, batch_size=5)
    assert overridden.config.batch_size == 5 and len(overridden) == 1 and overridden.batch_size == 5
    with pytest.raises(TypeError, match=r"loader backend 'torch' has no option \['order'\].*skip_corrupt"):
        create_loader("torch", colour.root, config, order="random")
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'is_training'"):
        create_loader("torch", colour.root, batch_size=2)


def test_memory_backend_checks_channels_source_and_shard(tmp_path):
    images, labels = torch.zeros(6, 8, 8, dtype=torch.uint8), torch.arange(6)
    kw = dict(batch_size=2, is_training=True, img_size=8, device="cpu", rank=0, world_size=1)
    assert len(create_loader("memory", (images, labels), mean=(0.5,), std=(0.5,), **kw)) == 3
    with pytest.raises(ValueError, match=r"have 3 value\(s\), but the 'memory' backend yields 1-channel images"):
        create_loader("memory", (images, labels), **kw)  # ImageNet's 3-value default
    with pytest.raises(ValueError, match="'torch' backend yields 3-channel images"):
        create_loader("torch", make_colour_folder(tmp_path / "f", (3, 2)).root, mean=(0.5,), std=(0.5,), **kw)
    with pytest.raises(TypeError, match=r"source is \(images, labels\)"):
        create_loader("memory", images, mean=(0.5,), std=(0.5,), **kw)
    with pytest.raises(ValueError, match="fewer than batch_size=8"):
        create_loader("memory", (images, labels), mean=(0.5,), std=(0.5,), **{**kw, "batch_size": 8})


def test_backend_registry_rule():
    assert {"torch", "ffcv", "dali", "memory"} <= set(list_backends())
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        register_backend("torch", TorchLoader)
    with pytest.raises(ValueError, match=r"unknown loader backend 'nope'; available: \["):
        create_loader("nope", ".", batch_size=1, is_training=False)


def test_registered_class_backend(tmp_path, monkeypatch):
    from mixkit.data import factory

    monkeypatch.setattr(factory, "_BACKENDS", __import__("copy").deepcopy(factory._BACKENDS))

    class Constant(LoaderBase):
        backend = "constant"

        def __init__(self, source, config, *, value: float = 0.0):
            super().__init__(config, classes=["only"])
            self.value = value
            self._set_shard(int(source), int(source))

        def _iter_epoch(self, epoch):
            b = self.config.batch_size
            for _ in range(len(self)):
                yield torch.full((b, 3, 2, 2), self.value), torch.zeros(b)

    register_backend("constant", Constant)
    loader = create_loader("constant", 6, batch_size=3, is_training=True, device="cpu", value=2.0)
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].eq(2.0).all() and batches[0][1].dtype == torch.int64
    with pytest.raises(ValueError, match="would yield no batch"):
        create_loader("constant", 2, batch_size=3, is_training=True, device="cpu")
    register_backend("constant", Constant, overwrite=True)  # replacing is explicit


def test_test_fixtures_are_not_package_api():
    assert not hasattr(mixkit.data, "build_photo_folder")
    with pytest.raises(ImportError):
        __import__("mixkit.data.photos")
