"""The contract of every mixing method: timm's arguments, the draw, the pairing, the soft targets, and the
optional parts a method may have (trainable modules, an extra loss, a saliency pass on the model).

A call is three steps, each its own method so that a new method overrides only what it changes:

1. ``draw(x)``: every random choice of this batch as one ``Draw`` value (lam, partner, branch, layer,
   direction, CutMix boxes), from NumPy's global generator as in timm; a method whose mix is decided by
   the model completes the draw in ``resolve(x, target, draw)`` (Co-Mixup: its saliency pass and
   optimisation, on the clean batch and its labels; a no-op here);
2. ``apply(x, target, draw, lam, partner)``: mixes the input, or arms a hook (feature-space methods); a
   method with a saliency pass may also compute it here, on the clean batch and its labels;
3. the soft targets: timm's ``mixup_target`` values for ``lam * y + (1 - lam) * y[partner]``, or
   ``weights @ y`` where the draw has label ``weights`` (methods mixing several inputs per output).

``last_draw`` keeps the last call's value (for logging, ``rearm()`` and tests); nothing else is set as a
side effect of a call. The optional parts, no-ops here:

* ``extra_modules()``: trainable modules of the method (a decoder, say). Engines add them to the optimizer,
  move them to the device, checkpoint and EMA them, and save them beside the model's weights
  (``<name>.safetensors``), never inside the model's state dict. Under DDP they are not wrapped: their
  gradients are averaged across processes by ``mixkit.mix.parts.sync_part_gradients`` at every optimizer
  update, zeros where a process did not use them, so a step that leaves them unused is no DDP error.
* ``extra_loss()``: a loss term of the last training forward (already weighted) that the engine adds to
  the classification loss before ``backward``; None when there is none (on a step that does not use it).
  ``extra_loss_name`` names it in the logs (``summary.csv``, the progress bar).
* ``uses_model_gradient``: the call runs a saliency pass on the model (``mixkit.mix.saliency``): the
  engine then calls the method inside its autocast, after moving the batch to the device.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .checks import check_batch, check_choice, check_config, check_model_classes, check_targets
from .hooks import MethodHook
from .labels import LabelRangeCheck, watch_model_classes
from .layers import unwrap_model
from .rng import beta, permutation, rand
from .targets import Lam, soft_targets, to_device, weighted_targets

__all__ = ["PAIRINGS", "Draw", "MixupBase"]

PAIRINGS = ("flip", "random")

COPY_ERROR = (
    "copy.deepcopy of a mixkit {method} mixing function would copy the model too, and the copy's mixing would "
    "drive a model that never trains; create one mixing function per model with create_mixup(..., model=model)"
)
PICKLE_ERROR = (
    "a mixkit {method} mixing function holds the model it mixes, so it cannot be pickled (the copy would drive a "
    "model that never trains): call mix.remove() before torch.save(model), or save model.state_dict() instead"
)
SHALLOW_COPY_ERROR = (
    "copy.copy of a mixkit {method} mixing function would share its hooks and armed state with the original, "
    "so two objects would arm one model; use the original, or create one mixing function per model with "
    "create_mixup(..., model=model)"
)


@dataclass(frozen=True, eq=False)
class Draw:
    """Every random choice of one mixing call, as one value.

    Attributes:
        lam: Weight of each sample: a float when one lam holds for the whole batch (timm's 'batch' mode of
            the input methods), else (B,) float32 per sample. 1 where nothing is mixed.
        partner: (B,) partner indices; None is timm's pairing, sample i with B - 1 - i.
        branch: 'none' (nothing mixed), 'input' (the input batch is mixed) or 'feature' (a hidden layer is
            mixed); methods may add their own.
        layer: The mixed layer ('input' for the input branch), None when nothing is mixed.
        direction: AlignMixup's alignment direction in the feature branch ('to_a' or 'to_b').
        cut: (B,) bool, the samples mixed by a CutMix box (None: no CutMix).
        boxes: (B, 4) int64 boxes (y0, y1, x0, x1) of the cut samples (rows of the others are unused).
        weights: (B, B) float32 label weights, rows summing to 1, for methods that mix several inputs into
            each output (Co-Mixup): output i's target is ``sum_j weights[i, j] * y_j``, and lam and partner
            are not used for the targets. None: the targets follow lam and partner.
    """

    lam: float | np.ndarray = 1.0
    partner: np.ndarray | None = None
    branch: str = "none"
    layer: str | None = None
    direction: str | None = None
    cut: np.ndarray | None = None
    boxes: np.ndarray | None = None
    weights: np.ndarray | None = None

    @property
    def mixed(self) -> bool:
        """Whether this call mixes anything."""
        return self.branch != "none"


class MixupBase:
    """Base of every mixing method, with timm's Mixup call contract: ``x, target = mixup_fn(x, target)``.

    timm's Mixup arguments and mixkit's ``pairing`` are declared, documented and checked here once;
    subclasses add only their own arguments and forward the rest (``create_mixup`` accepts the names of
    every ``__init__`` along the class's MRO). Every method is a context manager: ``remove()`` (the end of a
    ``with create_mixup(...) as mix:`` block) takes whatever it attached off the model.

    Args:
        mixup_alpha: lam ~ Beta(mixup_alpha, mixup_alpha); mixup is active if > 0. None: the method's
            default (``default_mixup_alpha``: 1.0 as in timm, 2.0 for the feature-space methods).
        cutmix_alpha: Beta parameter of CutMix; CutMix is active if > 0 (input methods only).
        cutmix_minmax: CutMix box size range as fractions of the image side; overrides cutmix_alpha.
        prob: Probability of mixing a batch ('batch' mode) or an element ('pair' / 'elem').
        switch_prob: Probability of CutMix instead of mixup when both are active.
        mode: 'batch' (one lam per batch), 'pair' (per pair of elements) or 'elem' (per element).
        correct_lam: Correct lam by the clipped CutMix box area.
        label_smoothing: Label smoothing of the soft targets.
        num_classes: Number of classes (the model's output size).
        multi_label: Targets are dense (B, num_classes) multi-label vectors (timm's ``multi_label``).
        pairing: 'flip' (timm's: sample i mixes with B - 1 - i; in an odd batch the middle sample pairs
            with itself) or 'random' (a uniform random permutation per batch; not with mode 'pair').
        model: The model. Required by methods that mix inside it or read its gradient
            (``needs_model``); for the others only used to check ``num_classes``: against its
            ``num_classes`` attribute (timm models), else against its output at its first training forward.
    """

    method: ClassVar[str] = "mixup"  # the name used in messages
    default_mixup_alpha: ClassVar[float] = 1.0
    supports_cutmix: ClassVar[bool] = True
    needs_model: ClassVar[bool] = False  # it mixes inside the model or reads its gradient: it holds the model
    uses_model_gradient: ClassVar[bool] = False  # its call runs a saliency pass (see the module docstring)
    extra_loss_name: ClassVar[str | None] = None  # the extra loss's column in summary.csv and on the progress bar

    def __init__(
        self,
        *,
        mixup_alpha: float | None = None,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        multi_label: bool = False,
        pairing: str = "flip",
        model: nn.Module | None = None,
    ) -> None:
        mixup_alpha = self.default_mixup_alpha if mixup_alpha is None else mixup_alpha
        if self.needs_model and model is None:
            raise ValueError(f"{self.method} needs the model (it mixes inside it or reads its gradient): "
                             "pass model=model")
        if self.needs_model and type(model).__name__ == "DataParallel":
            raise TypeError(
                "nn.DataParallel splits the batch across replicas running in threads, so the pairing and the "
                "method's hooks would act per replica; use DistributedDataParallel (one process per device)"
            )
        check_config(num_classes=num_classes, label_smoothing=label_smoothing, prob=prob, mode=mode)
        if model is not None:
            check_model_classes(model, num_classes)
        self._check_alphas(mixup_alpha, cutmix_alpha, cutmix_minmax)
        if not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"switch_prob must be in [0, 1], got {switch_prob!r}")
        check_choice("pairing", pairing, PAIRINGS)
        if pairing == "random" and mode == "pair":
            raise ValueError("mode 'pair' shares lam within flip pairs; with pairing='random' use 'batch' or 'elem'")
        # timm's attribute names, so code written for timm's Mixup reads them unchanged.
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = 1.0 if cutmix_minmax is not None else cutmix_alpha  # timm forces 1.0 with minmax
        self.cutmix_minmax = cutmix_minmax
        self.mix_prob = prob
        self.switch_prob = switch_prob
        self.mode = mode
        self.correct_lam = correct_lam
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.mixup_enabled = True  # timm's switch: a train loop sets it False to stop mixing
        self.pairing = pairing
        self.check_labels = LabelRangeCheck(num_classes)
        self.model = unwrap_model(model) if self.needs_model else None
        self.last_draw = Draw()
        self.class_check = self._watch_classes(model)
        self._method_hooks: list[MethodHook] = []

    @classmethod
    def check_cutmix(cls, cutmix_alpha: float, cutmix_minmax: Sequence[float] | None) -> None:
        """Refuses CutMix settings for a method that does not cut (also called before the model exists).

        Raises:
            ValueError: Naming the fix, the flags included.
        """
        if not cls.supports_cutmix and (cutmix_alpha or cutmix_minmax is not None):
            raise ValueError(
                f"{cls.method} does not do CutMix: set cutmix_alpha=0 and cutmix_minmax=None (on the command line: "
                "--cutmix 0 and no --cutmix-minmax); for CutMix use the 'cutmix' or 'mixup_cutmix' method"
            )

    def _check_alphas(self, mixup_alpha: float, cutmix_alpha: float, cutmix_minmax: Sequence[float] | None) -> None:
        self.check_cutmix(cutmix_alpha, cutmix_minmax)
        if not self.supports_cutmix:
            if not mixup_alpha > 0:
                raise ValueError(f"mixup_alpha must be > 0 (lam ~ Beta(mixup_alpha, mixup_alpha)), got {mixup_alpha!r}")
            return
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 < cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise ValueError(
                    f"cutmix_minmax must be (min, max) fractions with 0 < min < max <= 1, got {cutmix_minmax!r}"
                )
        elif mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("nothing to mix: set mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax")

    def _watch_classes(self, model: nn.Module | None) -> Any:
        """A one-shot class-count check on a model that does not say its count (feature methods' hooks do
        it themselves)."""
        return watch_model_classes(model, self.num_classes)

    # -- the draw -----------------------------------------------------------------------------------
    def _draw_lam(self, count: int | None) -> tuple[float | np.ndarray, bool | np.ndarray]:
        """timm's Mixup draws, in timm's order: (lam, use CutMix) for the batch (``count`` None) or for
        ``count`` elements ((count,) float32 lam and bool arrays); lam 1 where nothing is mixed."""
        both = self.mixup_alpha > 0 and self.cutmix_alpha > 0
        if count is None:
            if not (self.mixup_enabled and rand() < self.mix_prob):
                return 1.0, False
            use_cutmix = (rand() < self.switch_prob) if both else self.mixup_alpha <= 0
            return float(beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha)), bool(use_cutmix)
        lam = np.ones(count, dtype=np.float32)
        use_cutmix = np.zeros(count, dtype=bool)
        if not self.mixup_enabled:
            return lam, use_cutmix
        if both:
            use_cutmix = rand(count) < self.switch_prob
            lam_mix = np.where(use_cutmix, beta(self.cutmix_alpha, size=count), beta(self.mixup_alpha, size=count))
        elif self.mixup_alpha > 0:
            lam_mix = beta(self.mixup_alpha, size=count)
        else:
            use_cutmix = np.ones(count, dtype=bool)
            lam_mix = beta(self.cutmix_alpha, size=count)
        return np.where(rand(count) < self.mix_prob, lam_mix.astype(np.float32), lam), use_cutmix

    def _draw_partner(self, batch_size: int) -> np.ndarray | None:
        return permutation(batch_size) if self.pairing == "random" else None

    def draw(self, x: torch.Tensor) -> Draw:
        """Every random choice for the batch ``x`` (its shape only), as one ``Draw``."""
        raise NotImplementedError

    def resolve(self, x: torch.Tensor, target: torch.Tensor, draw: Draw) -> Draw:
        """Completes ``draw`` with what the model decides (a saliency pass on the clean batch ``x`` and its
        checked labels ``target``): the draw itself here. Co-Mixup computes its masks and label
        ``weights`` here, so that ``last_draw`` holds the mix that was applied."""
        return draw

    # -- the mix ------------------------------------------------------------------------------------
    def device_weights(self, draw: Draw, x: torch.Tensor) -> tuple[Lam, torch.Tensor | None]:
        """The draw's lam and partner indices on ``x``'s device (one copy each, shared by ``apply`` and the
        targets); a float lam stays a float."""
        lam = draw.lam if isinstance(draw.lam, float) else to_device(draw.lam, x.device)
        partner = None if draw.partner is None else to_device(draw.partner, x.device)
        return lam, partner

    def apply(self, x: torch.Tensor, target: torch.Tensor, draw: Draw, lam: Lam,
              partner: torch.Tensor | None) -> torch.Tensor:
        """Mixes the input (or arms the model) as ``draw`` says; returns what ``model(x)`` gets.

        ``target`` holds the batch's (checked) labels, for methods whose mix depends on them (a saliency pass);
        ``lam`` and ``partner`` are the draw's on ``x``'s device (``device_weights``).
        """
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixes a batch.

        Args:
            x: The model input, a (B, C, H, W) float batch.
            target: (B,) integer class indices (or (B, num_classes) with ``multi_label``).

        Returns:
            The input for ``model(x)`` and (B, num_classes) soft targets on ``x``'s device.
        """
        self._check_usable()
        batch_size = check_batch(x)
        check_targets(target, batch_size, self.num_classes, self.multi_label)
        if not self.multi_label:
            self.check_labels(target)
        draw = self.resolve(x, target, self.draw(x))
        lam, partner = self.device_weights(draw, x)
        x = self.apply(x, target, draw, lam, partner)
        self.last_draw = draw
        if draw.weights is not None:
            target = weighted_targets(target, to_device(draw.weights, x.device), num_classes=self.num_classes,
                                      label_smoothing=self.label_smoothing, multi_label=self.multi_label)
            return x, target
        target = soft_targets(target, lam, num_classes=self.num_classes, label_smoothing=self.label_smoothing,
                              multi_label=self.multi_label, partner=partner, device=x.device)
        return x, target

    def _check_usable(self) -> None:
        """Raises when the method can no longer mix (feature methods: after ``remove()``)."""

    # -- optional parts -----------------------------------------------------------------------------
    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules of the method, by name (none here). See the module docstring."""
        return {}

    def extra_loss(self) -> torch.Tensor | None:
        """The weighted loss term of the last training forward for the engine to add (None here)."""
        return None

    # -- state and lifetime --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue exactly (the draws themselves come from NumPy's state)."""
        return {"mixup_enabled": bool(self.mixup_enabled)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores ``state_dict()``."""
        self.mixup_enabled = bool(state.get("mixup_enabled", True))

    def add_model_hook(self, module: nn.Module, fn: Any, *, prepend: bool = False) -> MethodHook:
        """A forward hook for the method's own use (``hooks.MethodHook``: shared by deep copies of the model,
        which it ignores; ``prepend``: before the mixing hook, seeing the unmixed output), removed by
        ``remove()``."""
        hook = MethodHook(module, fn, prepend=prepend)
        self._method_hooks.append(hook)
        return hook

    def remove(self) -> None:
        """Takes what the method attached off the model: its own hooks and the one-shot class-count check."""
        for hook in self._method_hooks:
            hook.remove()
        self._method_hooks.clear()
        if self.class_check is not None:
            self.class_check.handle.remove()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    # A method that holds the model would drive a private copy of it after a copy or a pickle: refused.
    def __deepcopy__(self, memo: dict) -> Any:
        if self.needs_model:
            raise TypeError(COPY_ERROR.format(method=self.method))
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(vars(self), memo))
        return new

    def __copy__(self) -> Any:
        if self.needs_model:
            raise TypeError(SHALLOW_COPY_ERROR.format(method=self.method))
        new = object.__new__(type(self))
        new.__dict__.update(vars(self))
        return new

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self.needs_model:
            raise TypeError(PICKLE_ERROR.format(method=self.method))
        return super().__reduce_ex__(protocol)
