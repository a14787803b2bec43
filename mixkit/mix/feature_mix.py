"""Shared state machine of the feature-space methods: lam draws, targets, layer choice, hook arming.

Subclasses (``ManifoldMixup``, ``AlignMixup``) only say how a chosen layer's output is mixed. The call
contract is timm's Mixup: ``x, target = mixup_fn(x, target)``, then ``model(x)`` in training mode
consumes the armed mix.

Randomness comes from NumPy's global generator, as in timm's Mixup, so ``np.random.seed`` (plus
``torch.manual_seed`` for the model) makes a run repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .hooks import FeatureMixHooks, MixFn
from .layers import INPUT, LayerSpec, resolve_layers
from .targets import check_batch, check_config, check_targets, flip_lam, soft_targets

__all__ = ["FeatureMixupBase", "lam_weights", "mix_inputs"]


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


def lam_weights(lam: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """lam as a float, or a per-sample tensor shaped to broadcast over ``like`` in ``like``'s dtype.

    The dtype cast matters under autocast: a float32 lam would promote bf16 features to float32.
    """
    if not isinstance(lam, torch.Tensor):
        return float(lam)
    if lam.numel() != like.shape[0]:
        raise ValueError(f"lam has {lam.numel()} values for a batch of {like.shape[0]}")
    return lam.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def mix_inputs(x: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Plain mixup of a batch with its flip(0) partners: lam * x + (1 - lam) * x.flip(0), out of place."""
    w = lam_weights(lam, x)
    return x * w + x.flip(0) * (1 - w)


class FeatureMixupBase:
    """Base of the methods that mix at a layer chosen per batch (the input included).

    Pairing: sample ``i`` mixes with ``B - 1 - i`` (``flip(0)``, timm's convention). Any batch size >= 1
    works; in an odd batch the middle sample pairs with itself and is kept unmixed (lam = 1).

    Args:
        model: The model whose layers are mixed (wrappers are looked through).
        layers: Resolved layer names (``"input"`` allowed).
        mixup_alpha: lam ~ Beta(mixup_alpha, mixup_alpha).
        prob: Probability of mixing a batch ('batch' mode) or an element ('pair' / 'elem').
        mode: 'batch' (one lam per batch), 'pair' (one per pair) or 'elem' (one per element).
        label_smoothing: Label smoothing of the soft targets.
        num_classes: Number of classes.
        multi_label: Dense (B, num_classes) multi-label targets.
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
        layers: Sequence[LayerSpec],
        mixup_alpha: float,
        prob: float,
        mode: str,
        label_smoothing: float,
        num_classes: int,
        multi_label: bool = False,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        switch_prob: float = 0.5,
        correct_lam: bool = True,
    ) -> None:
        check_config(num_classes=num_classes, label_smoothing=label_smoothing, prob=prob, mode=mode)
        if model is None:
            raise ValueError(f"{self.method} mixes hidden features and needs the model: pass model=model")
        if not mixup_alpha > 0:
            raise ValueError(f"mixup_alpha must be > 0 (lam ~ Beta(mixup_alpha, mixup_alpha)), got {mixup_alpha!r}")
        if cutmix_alpha or cutmix_minmax is not None:
            raise ValueError(
                f"{self.method} does not do CutMix: set cutmix_alpha=0 and cutmix_minmax=None "
                "(for CutMix use create_mixup('cutmix') or 'mixup_cutmix')"
            )
        self.mixup_alpha = mixup_alpha
        self.mix_prob = prob
        self.mode = mode
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.mixup_enabled = True  # timm's switch: a train loop sets it False to stop mixing
        self.layers = resolve_layers(model, layers)
        self.hooks = FeatureMixHooks(model=model, layers=self.layers)
        self.last_layer: str | None = None  # where the last call mixed (None: not mixed), for logging
        self.last_lam: np.ndarray | None = None  # the last call's per-sample lam (None: not mixed)

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
        lam = flip_lam(lam)
        return None if np.all(lam == 1.0) else lam

    def _choose_layer(self) -> str:
        """The layer to mix at for this batch (subclasses add their own policy)."""
        return self.layers[randint(len(self.layers))] if len(self.layers) > 1 else self.layers[0]

    def _make_mix_fn(self, layer: str, lam: torch.Tensor, batch_size: int) -> MixFn:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws this batch's mix, mixes the input or arms the chosen layer, and mixes the targets.

        Args:
            x: The model input batch (float).
            target: (B,) integer class indices (or (B, num_classes) with ``multi_label``).

        Returns:
            The input for ``model(x)`` (mixed when the input was chosen, else ``x`` itself) and
            (B, num_classes) soft targets on ``x``'s device.
        """
        batch_size = check_batch(x)
        check_targets(target, batch_size, self.num_classes, self.multi_label)
        self.last_layer = None
        lam_np = self.last_lam = self._sample_lam(batch_size)
        if lam_np is None:
            lam: float | torch.Tensor = 1.0
        else:
            lam = torch.from_numpy(lam_np).to(x.device)
            layer = self._choose_layer()
            if layer == INPUT:
                x = mix_inputs(x, lam)
            else:
                self.hooks.arm(layer, self._make_mix_fn(layer, lam, batch_size))
            self.last_layer = layer
        target = soft_targets(
            target, lam, num_classes=self.num_classes, label_smoothing=self.label_smoothing,
            multi_label=self.multi_label, device=x.device,
        )
        return x, target

    def remove(self) -> None:
        """Removes the hooks from the model (the object is unusable afterwards)."""
        self.hooks.remove()
