"""Input-space mixup and CutMix: timm's ``timm.data.Mixup``, reused as it is.

``InputMixup`` subclasses timm's Mixup and only adds what timm leaves out: argument and target checks
with readable errors, and odd batch sizes. For even batches the output is exactly timm's (same random
draws, same in-place edits of ``x``), which the tests assert under one seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.data import Mixup
from torch import nn

from .context import MixupContext
from .targets import (
    LabelRangeCheck,
    check_batch,
    check_config,
    check_targets,
    soft_targets,
    watch_model_classes,
)

__all__ = ["InputMixup"]


class InputMixup(Mixup, MixupContext):
    """timm's Mixup / CutMix with checks and odd-batch support.

    Pairing is timm's: sample ``i`` mixes with ``B - 1 - i`` (``x.flip(0)``). timm asserts an even batch;
    here an odd batch is accepted and its middle sample pairs with itself, so it stays unmixed (its
    target stays its own smoothed one-hot). A batch of one is therefore returned unmixed.

    Like timm's, the call mixes ``x`` in place and returns it. The targets are timm's values
    (``soft_targets``), built without a device-side assert for bad labels, whose range is checked without
    a host sync on CUDA (``LabelRangeCheck``).

    Args:
        mixup_alpha: Beta(alpha, alpha) parameter of mixup; mixup is active if > 0.
        cutmix_alpha: Beta parameter of CutMix; CutMix is active if > 0.
        cutmix_minmax: CutMix box size range as fractions of the image side; overrides cutmix_alpha.
        prob: Probability of mixing a batch (or element, in 'pair' / 'elem' modes).
        switch_prob: Probability of CutMix instead of mixup when both are active.
        mode: 'batch' (one lam per batch), 'pair' (per pair of elements) or 'elem' (per element).
        correct_lam: Correct lam by the clipped CutMix box area.
        label_smoothing: Label smoothing of the soft targets.
        num_classes: Number of classes of the targets.
        multi_label: Targets are dense (B, num_classes) multi-label vectors (timm's multi_label).
        model: Optional; only used to check ``num_classes``: against its ``num_classes`` attribute (timm
            models), else against its output at its first training forward.
    """

    def __init__(
        self,
        *,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        multi_label: bool = False,
        model: nn.Module | None = None,
    ) -> None:
        check_config(num_classes=num_classes, label_smoothing=label_smoothing, prob=prob, mode=mode)
        # A model that does not say its class count is checked at its first training forward.
        self.class_check = watch_model_classes(model, num_classes)
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 < cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise ValueError(
                    f"cutmix_minmax must be (min, max) fractions with 0 < min < max <= 1, got {cutmix_minmax!r}"
                )
        elif mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("nothing to mix: set mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax")
        if not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"switch_prob must be in [0, 1], got {switch_prob!r}")
        kwargs = dict(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            cutmix_minmax=cutmix_minmax,
            prob=prob,
            switch_prob=switch_prob,
            mode=mode,
            correct_lam=correct_lam,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )
        if multi_label:  # keyword only when used: older timm releases lack it
            kwargs["multi_label"] = True
        super().__init__(**kwargs)
        self.multi_label = multi_label
        self.check_labels = LabelRangeCheck(num_classes)

    def remove(self) -> None:
        """Takes the one-shot class-count check off the model, if it is still there."""
        if self.class_check is not None:
            self.class_check.handle.remove()

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixes a batch.

        Args:
            x: (B, C, H, W) float images.
            target: (B,) integer class indices.

        Returns:
            The mixed ``x`` (the same tensor, edited in place) and (B, num_classes) soft targets.
        """
        batch_size = check_batch(x)
        check_targets(target, batch_size, self.num_classes, self.multi_label)
        if not self.multi_label:
            self.check_labels(target)
        # timm's per-mode mixing with the flip(0) pairing (timm's own __call__ for even batches does the
        # same); in an odd batch the middle sample meets itself.
        if self.mode == "elem":
            lam = self._mix_elem(x)
        elif self.mode == "pair":
            lam = self._mix_pair(x)  # covers the B // 2 outer pairs; an odd batch's middle is untouched
            if batch_size % 2:
                half = batch_size // 2
                lam = torch.cat([lam[:half], lam.new_ones(1, 1), lam[half:]])
        else:
            lam = self._mix_batch(x)
        target = soft_targets(
            target, lam, num_classes=self.num_classes, label_smoothing=self.label_smoothing,
            multi_label=self.multi_label,
        )
        return x, target
