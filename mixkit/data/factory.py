"""``create_loader``: one interface over the 'torch', 'ffcv', 'dali' and 'memory' backends, looked up by name."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Sequence
from typing import Any

from ..registry import Registry
from .base import LoaderBase
from .config import LoaderConfig, config_fields

__all__ = ["create_loader", "list_backends", "register_backend"]

# Backend name -> its class, or "module:class" imported on first use so that ffcv and DALI stay optional.
_BACKENDS: Registry[str | type[LoaderBase]] = Registry("loader backend")
_BACKENDS.register("torch", "mixkit.data.torch_loader:TorchLoader")
_BACKENDS.register("ffcv", "mixkit.data.ffcv_loader:FfcvLoader")
_BACKENDS.register("dali", "mixkit.data.dali_loader:DaliLoader")
_BACKENDS.register("memory", "mixkit.data.memory_loader:MemoryLoader")
FFCV_INSTALL = ("pip install 'mixkit[ffcv]' (ffcv builds from source: first apt-get install g++ pkg-config "
                "libopencv-dev libturbojpeg0-dev, or your system's OpenCV and libjpeg-turbo development packages)")
_EXTRAS = {"ffcv": FFCV_INSTALL,
           "dali": "pip install 'mixkit[dali]'"}


def register_backend(name: str, target: str | type[LoaderBase], *, overwrite: bool = False) -> None:
    """Registers a backend: a ``LoaderBase`` subclass, or ``"module:class"`` to import on first use.

    Raises:
        ValueError: ``name`` is taken and ``overwrite`` is False.
    """
    _BACKENDS.register(name, target, overwrite=overwrite)


def list_backends() -> list[str]:
    """Names accepted by ``create_loader``."""
    return _BACKENDS.list()


def _backend_class(name: str) -> type[LoaderBase]:
    target = _BACKENDS.get(name)
    if not isinstance(target, str):
        return target
    module, cls = target.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        hint = _EXTRAS.get(name, "install its dependencies")
        raise ImportError(f"loader backend {name!r} needs a package that is missing ({e}): {hint}.") from e


def _check_backend_options(name: str, cls: type[LoaderBase], options: dict[str, Any]) -> None:
    params = list(inspect.signature(cls.__init__).parameters.values())[3:]  # after self, source, config
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"loader backend {name!r} has no option {unknown}: its own options are {accepted}, "
                        f"the shared ones (LoaderConfig) {sorted(config_fields())}.")


def create_loader(
        backend: str,
        source: str | os.PathLike | Sequence[str | os.PathLike] | tuple[Any, Any],
        config: LoaderConfig | None = None,
        **options: Any,
) -> LoaderBase:
    """Creates an image-classification loader.

    Every backend yields ``(images, labels)``: float32 NCHW images normalised with ``mean``/``std`` on
    ``device``, and int64 labels. Training applies RandomResizedCrop + horizontal flip and reshuffles
    every epoch; evaluation resizes to ``img_size / crop_pct`` and centre-crops. Each rank reads a fixed,
    disjoint shard; in evaluation the shards hold every sample exactly once (see ``mixkit.data.sharding``).

    ``create_loader("torch", root, batch_size=128, is_training=True, num_workers=8)``: the keywords named
    by ``LoaderConfig`` (batch_size, is_training, img_size, num_workers, device, channels_last, drop_last,
    rank, world_size, seed, mean, std, crop_pct, scale, ratio, hflip, class_map; documented there) build the shared
    configuration; a ``config`` may be given instead, and keywords then override its fields. The other
    keywords are the backend's own options, e.g. ``skip_corrupt`` ('torch', 'dali'), ``order`` and
    ``os_cache`` ('ffcv'); see each backend class.

    Args:
        backend: 'torch', 'ffcv', 'dali' or 'memory' (``list_backends()``).
        source: ImageFolder root ('torch', 'dali'); .beton from ``mixkit convert`` ('ffcv'); webdataset
            .tar shards ('dali'); an ``(images, labels)`` pair of tensors ('memory').
        config: The shared options; None builds them from the keywords.
        **options: ``LoaderConfig`` fields and the backend's own options.

    Raises:
        ValueError: Unknown backend or bad option.
        TypeError: An option that neither ``LoaderConfig`` nor the backend knows.
        ImportError: The backend's optional package is missing.
    """
    cls = _backend_class(backend)
    shared = {k: options.pop(k) for k in list(options) if k in config_fields()}
    config = LoaderConfig(**shared) if config is None else dataclasses.replace(config, **shared)
    _check_backend_options(backend, cls, options)
    return cls(source, config, **options)
