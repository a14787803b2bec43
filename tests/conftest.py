"""Shared pytest fixtures, one headed section per area (append yours under its own heading)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import timm
import torch
from torch import nn

# ---------------------------------------------------------------------------------------------------
# Mixing methods (tests/test_mix_*.py)
#
# Models are built fresh for every test (function scope), so a test that arms, mutates (channels_last,
# checkpointing, eval) or leaks hooks cannot affect another one. The class count is the test module's
# NUM_CLASSES constant (5 when the module has none).
# ---------------------------------------------------------------------------------------------------


def _mix_classes(request: pytest.FixtureRequest) -> int:
    return int(getattr(request.module, "NUM_CLASSES", 5))


@pytest.fixture
def resnet(request: pytest.FixtureRequest) -> nn.Module:
    """A fresh timm resnet18 (random weights, training mode)."""
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=_mix_classes(request)).train()


@pytest.fixture
def convnext(request: pytest.FixtureRequest) -> nn.Module:
    """A fresh timm convnext_atto (per-sample LayerNorm: cross-sample gradients come only from mixing)."""
    torch.manual_seed(0)
    return timm.create_model("convnext_atto", pretrained=False, num_classes=_mix_classes(request)).train()


@pytest.fixture
def vit(request: pytest.FixtureRequest) -> nn.Module:
    """A fresh two-block timm ViT on 32 px images (patch 8: 16 patch tokens and a class token)."""
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=_mix_classes(request), img_size=32, patch_size=8,
        depth=2,
    ).train()


@pytest.fixture
def make_batch(request: pytest.FixtureRequest) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``make_batch(batch_size=4, size=64, seed=0)``: seeded images and class indices."""
    num_classes = _mix_classes(request)

    def make(batch_size: int = 4, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size, 3, size, size, generator=g)
        return x, torch.randint(0, num_classes, (batch_size,), generator=g)

    return make


@contextlib.contextmanager
def _capture(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    try:
        yield seen
    finally:
        handle.remove()


@pytest.fixture
def capture() -> Callable[[nn.Module], contextlib.AbstractContextManager[list[torch.Tensor]]]:
    """``with capture(module) as seen:`` records the module's (detached) outputs, as seen after any hooks
    registered earlier: a capture opened after mixkit's hooks sees the mixed output."""
    return _capture


# ---------------------------------------------------------------------------------------------------
# Data (tests/test_data_*.py and everything that scans an ImageFolder)
#
# The ImageFolder verdict cache (mixkit.data.verdicts) goes to a folder of this session, never to the
# user's ~/.cache; subprocesses inherit the variable.
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _mixkit_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import os

    previous = os.environ.get("MIXKIT_VALIDATE_CACHE")
    os.environ["MIXKIT_VALIDATE_CACHE"] = str(tmp_path_factory.mktemp("mixkit-cache"))
    yield
    if previous is None:
        os.environ.pop("MIXKIT_VALIDATE_CACHE", None)
    else:
        os.environ["MIXKIT_VALIDATE_CACHE"] = previous
