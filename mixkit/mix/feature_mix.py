"""Shared state machine of the feature-space methods: timm's arguments, lam draws, pairing, targets,
layer choice and hook arming.

Subclasses (``ManifoldMixup``, ``AlignMixup``) only say which layers they default to and how a chosen
layer's output is mixed; timm's Mixup arguments are declared, documented and checked here once. The call
contract is timm's Mixup: ``x, target = mixup_fn(x, target)``, then ``model(x)`` in training mode with
grad enabled consumes the armed mix (see ``hooks.py`` for the rules).

Randomness comes from NumPy's global generator, as in timm's Mixup, so ``np.random.seed`` (plus
``torch.manual_seed`` for the model) makes a run repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .context import MixupContext
from .hooks import PICKLE_ERROR, FeatureMixHooks, MixFn
from .layers import INPUT, LayerSpec, resolve_layers
from .targets import (
    LabelRangeCheck,
    check_batch,
    check_choice,
    check_config,
    check_model_classes,
    check_targets,
    flip_lam,
    pair_with,
    soft_targets,
    to_device,
)

__all__ = ["PAIRINGS", "FeatureMixupBase", "lam_weights", "mix_inputs"]

PAIRINGS = ("flip", "random")


# NumPy's global generator on purpose (hence the noqa): timm's Mixup and train.py's random_seed() use
# it, so a run seeded the timm way is repeatable with every method.
def rand(size: int | None = None) -> float | np.ndarray:
    """Uniform [0, 1) draws from NumPy's global generator."""
    return np.random.rand() if size is None else np.random.rand(size)  # noqa: NPY002


def beta(alpha: float, size: int | None = None) -> float | np.ndarray:
    """Beta(alpha, alpha) draws from NumPy's global generator."""
    return np.random.beta(alpha, alpha, size=size)  # noqa: NPY002


def randint(high: int) -> int:
    """A uniform int in [0, high) from NumPy's global generator."""
    return int(np.random.randint(high))  # noqa: NPY002


def permutation(n: int) -> np.ndarray:
    """A uniform permutation of range(n) from NumPy's global generator."""
    return np.random.permutation(n)  # noqa: NPY002


def lam_weights(lam: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """lam as a float, or a per-sample tensor shaped to broadcast over ``like`` in ``like``'s dtype.

    The dtype cast matters under autocast: a float32 lam would promote bf16 features to float32.
    """
    if not isinstance(lam, torch.Tensor):
        return float(lam)
    if lam.numel() != like.shape[0]:
        raise ValueError(f"lam has {lam.numel()} values for a batch of {like.shape[0]}")
    return lam.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def mix_inputs(x: torch.Tensor, lam: float | torch.Tensor, partner: torch.Tensor | None = None) -> torch.Tensor:
    """Plain mixup of a batch with its partners, out of place: lam * x + (1 - lam) * x[partner].

    ``partner`` None is timm's pairing, ``x.flip(0)``.
    """
    w = lam_weights(lam, x)
    return x * w + pair_with(x, partner) * (1 - w)


class FeatureMixupBase(MixupContext):
    """Base of the methods that mix at a layer chosen per batch (the input included).

    Pairing ``'flip'`` (timm's): sample ``i`` mixes with ``B - 1 - i``; any batch size >= 1 works, and in an
    odd batch the middle sample pairs with itself and is kept unmixed (lam = 1). Pairing ``'random'`` (the
    AlignMixup authors'): a uniform random permutation per batch.

    Use it as a context manager, ``with create_mixup(name, model=model) as mix:``, to take the hooks off
    at the end; ``remove()`` does the same by hand. Copies and pickles are refused (they would drive a
    private copy of the model).

    Args:
        model: The model whose layers are mixed (wrappers are looked through).
        layers: Layer set, one drawn per batch: module names, timm feature_info indices or ``"input"``
            (where the method allows it). None: the method's default.
        mixup_alpha: lam ~ Beta(mixup_alpha, mixup_alpha).
        prob: Probability of mixing a batch ('batch' mode) or an element ('pair' / 'elem').
        mode: 'batch' (one lam per batch), 'pair' (one per pair) or 'elem' (one per element).
        label_smoothing: Label smoothing of the soft targets.
        num_classes: Number of classes (the model's output size; checked at the first training forward).
        multi_label: Dense (B, num_classes) multi-label targets.
        pairing: 'flip' (timm's ``x.flip(0)``) or 'random' (a random permutation per batch; not with
            mode 'pair').
        cutmix_alpha: Accepted for timm's argument set; must be 0 (these methods do not cut).
        cutmix_minmax: Accepted for timm's argument set; must be None.
        switch_prob: Accepted and unused (there is no CutMix to switch to).
        correct_lam: Accepted and unused (no CutMix box).
    """

    method = "feature"

    def __init__(
        self,
        *,
        model: nn.Module,
        layers: LayerSpec | Sequence[LayerSpec] | None = None,
        mixup_alpha: float = 2.0,
        prob: float = 1.0,
        mode: str = "batch",
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        multi_label: bool = False,
        pairing: str = "flip",
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        switch_prob: float = 0.5,
        correct_lam: bool = True,
    ) -> None:
        if model is None:
            raise ValueError(f"{self.method} mixes hidden features and needs the model: pass model=model")
        check_config(num_classes=num_classes, label_smoothing=label_smoothing, prob=prob, mode=mode)
        check_model_classes(model, num_classes)
        if not mixup_alpha > 0:
            raise ValueError(f"mixup_alpha must be > 0 (lam ~ Beta(mixup_alpha, mixup_alpha)), got {mixup_alpha!r}")
        if cutmix_alpha or cutmix_minmax is not None:
            raise ValueError(
                f"{self.method} does not do CutMix: set cutmix_alpha=0 and cutmix_minmax=None "
                "(for CutMix use create_mixup('cutmix') or 'mixup_cutmix')"
            )
        check_choice("pairing", pairing, PAIRINGS)
        if pairing == "random" and mode == "pair":
            raise ValueError("mode 'pair' shares lam within flip pairs; with pairing='random' use 'batch' or 'elem'")
        self.mixup_alpha = mixup_alpha
        self.mix_prob = prob
        self.mode = mode
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.pairing = pairing
        self.mixup_enabled = True  # timm's switch: a train loop sets it False to stop mixing
        self.layers = resolve_layers(model, self._default_layers(model) if layers is None else layers)
        self._check_layers(self.layers)
        self.hooks = FeatureMixHooks(model=model, layers=self.layers, num_classes=num_classes)
        self.check_labels = LabelRangeCheck(num_classes)
        self.last_layer: str | None = None  # where the last call mixed (None: not mixed), for logging
        self.last_lam: np.ndarray | None = None  # the last call's per-sample lam (None: not mixed)
        self.last_partner: np.ndarray | None = None  # the last call's partner indices (None: flip or not mixed)
        self._last_arm: tuple[str, torch.Tensor, torch.Tensor | None, int] | None = None

    # -- what subclasses define ---------------------------------------------------------------------
    def _default_layers(self, model: nn.Module) -> LayerSpec | Sequence[LayerSpec]:
        raise NotImplementedError

    def _check_layers(self, layers: Sequence[str]) -> None:
        """Rejects layers the method cannot mix at (default: all are fine)."""

    def _make_mix_fn(self, layer: str, lam: torch.Tensor, partner: torch.Tensor | None, batch_size: int) -> MixFn:
        raise NotImplementedError

    # -- the draw ---------------------------------------------------------------------------------
    def _sample_lam(self, batch_size: int) -> np.ndarray | None:
        """Per-sample lam (float32, (B,)), or None when nothing is mixed this call."""
        if not self.mixup_enabled:
            return None
        if self.mode == "batch":
            if rand() >= self.mix_prob:
                return None
            lam = np.full(batch_size, beta(self.mixup_alpha), dtype=np.float32)
        else:
            count = batch_size if self.mode == "elem" else batch_size // 2
            lam = beta(self.mixup_alpha, size=count).astype(np.float32)
            lam = np.where(rand(count) < self.mix_prob, lam, np.float32(1.0))
            if self.mode == "pair":  # both members of a pair share lam, as in timm's 'pair' mode
                middle = [1.0] if batch_size % 2 else []
                lam = np.concatenate([lam, np.asarray(middle, dtype=np.float32), lam[::-1]])
        if self.pairing == "flip":
            lam = flip_lam(lam)
        return None if np.all(lam == 1.0) else lam

    def _choose_layer(self) -> str:
        """The layer to mix at for this batch (subclasses add their own policy)."""
        return self.layers[randint(len(self.layers))] if len(self.layers) > 1 else self.layers[0]

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws this batch's mix, mixes the input or arms the chosen layer, and mixes the targets.

        Args:
            x: The model input, a (B, C, H, W) float batch.
            target: (B,) integer class indices (or (B, num_classes) with ``multi_label``).

        Returns:
            The input for ``model(x)`` (mixed when the input was chosen, else ``x`` itself) and
            (B, num_classes) soft targets on ``x``'s device.
        """
        self.hooks.check_attached()
        batch_size = check_batch(x)
        check_targets(target, batch_size, self.num_classes, self.multi_label)
        if not self.multi_label:
            self.check_labels(target)
        self.last_layer = self.last_partner = self._last_arm = None
        lam_np = self.last_lam = self._sample_lam(batch_size)
        lam: float | torch.Tensor = 1.0
        partner = None
        if lam_np is not None:
            lam = to_device(lam_np, x.device)
            if self.pairing == "random":
                self.last_partner = permutation(batch_size)
                partner = to_device(self.last_partner, x.device)
            layer = self._choose_layer()
            if layer == INPUT:
                x = mix_inputs(x, lam, partner)
            else:
                self._last_arm = (layer, lam, partner, batch_size)
                self.hooks.arm(layer, self._make_mix_fn(layer, lam, partner, batch_size))
            self.last_layer = layer
        target = soft_targets(
            target, lam, num_classes=self.num_classes, label_smoothing=self.label_smoothing,
            multi_label=self.multi_label, partner=partner, device=x.device,
        )
        return x, target

    def rearm(self) -> None:
        """Arms the last call's mix again, with the same lam, pairing, layer (and direction), unsolved.

        For optimisers that run a second training forward on the same batch (SAM and its variants): call
        it between the two forwards, so the second one mixes like the first. When the last call mixed
        the input (or nothing), there is nothing to arm: feed the same returned ``x`` again.
        """
        self.hooks.check_attached()
        if self._last_arm is not None:
            layer, lam, partner, batch_size = self._last_arm
            self.hooks.arm(layer, self._make_mix_fn(layer, lam, partner, batch_size))

    def remove(self) -> None:
        """Removes the hooks from the model (the object cannot mix afterwards)."""
        self.hooks.remove()

    def __deepcopy__(self, memo: dict) -> Any:
        raise TypeError(
            f"copy.deepcopy of a mixkit {self.method} mixing function would copy the model too and arm the "
            "copy's layers, which never run, so the mixed targets would meet unmixed features; create one "
            "mixing function per model with create_mixup(..., model=model)"
        )

    def __copy__(self) -> Any:
        raise TypeError(
            f"copy.copy of a mixkit {self.method} mixing function would share its hooks and armed state with the "
            "original, so two objects would arm one model; use the original, or create one mixing function "
            "per model with create_mixup(..., model=model)"
        )

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(PICKLE_ERROR)
