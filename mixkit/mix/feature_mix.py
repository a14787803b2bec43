"""The feature-space subclass of the method contract: a layer drawn per batch, armed through hooks.

``FeatureMixupBase`` owns the layers and the hooks; subclasses (``ManifoldMixup``, ``AlignMixup``) say
which layers they default to, how the layer and direction are drawn, and how a chosen layer's output is
mixed. The call contract is timm's Mixup: ``x, target = mixup_fn(x, target)``, then ``model(x)`` in
training mode with grad enabled consumes the armed mix (see ``hooks.py`` for the rules). Hooks are only
attached when some layer needs one (a method mixing at ``"input"`` only attaches none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import Draw, MixupBase
from .hooks import FeatureMixHooks, MixFn
from .layers import INPUT, LayerSpec, resolve_layers
from .rng import randint
from .targets import Lam, flip_lam, mix_inputs, to_device

__all__ = ["FeatureMixupBase"]

REMOVED_ERROR = (
    "this mixing function's hooks were removed (remove(), or the end of its `with` block), so it can no longer "
    "mix hidden features; create a new one with create_mixup(..., model=model)"
)


class FeatureMixupBase(MixupBase):
    """Base of the methods that mix at a layer chosen per batch (the input included).

    Pairing ``'flip'`` (timm's): sample ``i`` mixes with ``B - 1 - i``; any batch size >= 1 works, and in an
    odd batch the middle sample pairs with itself and is kept unmixed (lam = 1). Pairing ``'random'`` (the
    AlignMixup authors'): a uniform random permutation per batch.

    Use it as a context manager, ``with create_mixup(name, model=model) as mix:``, to take the hooks off
    at the end; ``remove()`` does the same by hand. Copies and pickles are refused (they would drive a
    private copy of the model).

    Args:
        layers: Layer set, one drawn per batch: module names, timm feature_info indices or ``"input"``
            (where the method allows it). None: the method's default.
        **kwargs: ``MixupBase``'s arguments (``model`` is required; ``mixup_alpha`` defaults to 2.0, the
            papers' value; CutMix is refused).
    """

    method = "feature"
    default_mixup_alpha = 2.0
    supports_cutmix = False
    needs_model = True

    def __init__(self, *, layers: LayerSpec | Sequence[LayerSpec] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layers = resolve_layers(self.model, self._default_layers(self.model) if layers is None else layers)
        self._check_layers(self.layers)
        hooked = any(layer != INPUT for layer in self.layers)
        self.hooks = FeatureMixHooks(model=self.model, layers=self.layers, num_classes=self.num_classes) \
            if hooked else None
        self._removed = False

    def _watch_classes(self, model: nn.Module | None) -> Any:
        return None  # the hooks check the first training forward's output (FeatureMixHooks)

    # -- what subclasses define ---------------------------------------------------------------------
    def _default_layers(self, model: nn.Module) -> LayerSpec | Sequence[LayerSpec]:
        raise NotImplementedError

    def _check_layers(self, layers: Sequence[str]) -> None:
        """Rejects layers the method cannot mix at (default: all are fine)."""

    def _make_mix_fn(self, draw: Draw, lam: torch.Tensor, partner: torch.Tensor | None, batch_size: int) -> MixFn:
        """The function that mixes the output of ``draw.layer``."""
        raise NotImplementedError

    def _draw_site(self, draw: Draw) -> Draw:
        """Where this batch is mixed: a layer drawn uniformly from ``layers`` (subclasses add their own)."""
        layer = self.layers[randint(len(self.layers))] if len(self.layers) > 1 else self.layers[0]
        return dataclasses.replace(draw, layer=layer, branch="input" if layer == INPUT else "feature")

    # -- the draw -----------------------------------------------------------------------------------
    def _feature_lam(self, batch_size: int) -> np.ndarray | None:
        """Per-sample lam (float32, (B,)), or None when nothing is mixed this call."""
        if self.mode == "batch":
            lam, _ = self._draw_lam(None)
            if lam == 1.0:
                return None
            lam = np.full(batch_size, lam, dtype=np.float32)
        else:
            half, _ = self._draw_lam(batch_size if self.mode == "elem" else batch_size // 2)
            lam = half
            if self.mode == "pair":  # both members of a pair share lam, as in timm's 'pair' mode
                middle = [1.0] if batch_size % 2 else []
                lam = np.concatenate([half, np.asarray(middle, dtype=np.float32), half[::-1]])
        if self.pairing == "flip":
            lam = flip_lam(lam)
        return None if np.all(lam == 1.0) else lam

    def draw(self, x: torch.Tensor) -> Draw:
        batch_size = x.shape[0]
        lam = self._feature_lam(batch_size)
        if lam is None:
            return Draw()
        return self._draw_site(Draw(lam=lam, partner=self._draw_partner(batch_size)))

    # -- the mix ------------------------------------------------------------------------------------
    def apply(self, x: torch.Tensor, target: torch.Tensor, draw: Draw, lam: Lam,
              partner: torch.Tensor | None) -> torch.Tensor:
        if not draw.mixed:
            return x
        if draw.layer == INPUT:
            return mix_inputs(x, lam, partner)
        self.hooks.arm(draw.layer, self._make_mix_fn(draw, lam, partner, x.shape[0]))
        return x

    def _check_usable(self) -> None:
        if self._removed:
            raise RuntimeError(REMOVED_ERROR)

    def rearm(self) -> None:
        """Arms the last call's mix again, with the same lam, pairing, layer (and direction), unsolved.

        For optimisers that run a second training forward on the same batch (SAM and its variants): call
        it between the two forwards, so the second one mixes like the first. When the last call mixed
        the input (or nothing), there is nothing to arm: feed the same returned ``x`` again.
        """
        self._check_usable()
        draw = self.last_draw
        if draw.branch != "feature":
            return
        device = next(iter(self.hooks.model.parameters()), torch.empty(0)).device
        lam = to_device(draw.lam, device)
        partner = None if draw.partner is None else to_device(draw.partner, device)
        self.hooks.arm(draw.layer, self._make_mix_fn(draw, lam, partner, len(draw.lam)))

    def remove(self) -> None:
        """Removes the hooks from the model (the object cannot mix afterwards)."""
        if self.hooks is not None:
            self.hooks.remove()
        super().remove()
        self._removed = True
