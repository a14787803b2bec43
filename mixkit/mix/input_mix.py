"""Input-space mixup and CutMix with timm's ``timm.data.Mixup`` semantics, on mixkit's method contract.

``InputMixup`` draws exactly what timm's Mixup draws, in timm's order, from NumPy's global generator, and
mixes with the same arithmetic, so for even batches with the flip pairing its output is timm's to the bit
(the tests compare under one seed). The CutMix boxes come from timm's own ``cutmix_bbox_and_lam``. What it
adds: the draw as one value (``last_draw``), argument and target checks with readable errors, odd batch
sizes, and mixkit's ``pairing='random'``. It is a subclass of timm's Mixup, so code that checks for one (or
reads timm's attribute names) accepts it.
"""

from __future__ import annotations

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import cutmix_bbox_and_lam

from .base import Draw, MixupBase
from .targets import Lam, pair_with, to_device

__all__ = ["InputMixup"]


class InputMixup(MixupBase, Mixup):
    """timm's Mixup / CutMix with checks, odd batches and a random pairing option.

    Pairing 'flip' is timm's: sample ``i`` mixes with ``B - 1 - i`` (``x.flip(0)``). timm asserts an even
    batch; here an odd batch is accepted: in 'batch' and 'elem' modes its middle sample mixes with itself
    (so its image and target stay its own), in 'pair' mode it is left alone. Like timm's, the call mixes
    ``x`` in place and returns it.

    Its arguments are ``MixupBase``'s (timm's Mixup arguments, ``pairing`` and ``model``); ``mixup_alpha``
    defaults to 1.0 as in timm.
    """

    method = "input mixup"

    def draw(self, x: torch.Tensor) -> Draw:
        batch_size = x.shape[0]
        if self.mode == "batch":
            lam, use_cutmix = self._draw_lam(None)
            if lam == 1.0:
                return Draw()
            partner = self._draw_partner(batch_size)
            if not use_cutmix:
                return Draw(lam=lam, partner=partner, branch="input", layer="input")
            box, lam = cutmix_bbox_and_lam(x.shape, lam, ratio_minmax=self.cutmix_minmax, correct_lam=self.correct_lam)
            return Draw(lam=float(lam), partner=partner, branch="input", layer="input",
                        cut=np.ones(batch_size, dtype=bool), boxes=np.tile(np.asarray(box, dtype=np.int64), (batch_size, 1)))
        pair = self.mode == "pair"
        lam, cut = self._draw_lam(batch_size // 2 if pair else batch_size)
        partner = self._draw_partner(batch_size)
        boxes = np.zeros((len(lam), 4), dtype=np.int64)
        for i in np.flatnonzero((lam != 1.0) & cut):  # timm draws the boxes in sample order, after the lams
            box, lam[i] = cutmix_bbox_and_lam(x[0].shape, lam[i], ratio_minmax=self.cutmix_minmax,
                                              correct_lam=self.correct_lam)
            boxes[i] = box
        if pair:  # both members of a pair share lam and box; the middle of an odd batch is left alone
            middle = batch_size % 2
            lam = np.concatenate([lam, np.ones(middle, dtype=np.float32), lam[::-1]])
            cut = np.concatenate([cut, np.zeros(middle, dtype=bool), cut[::-1]])
            boxes = np.concatenate([boxes, np.zeros((middle, 4), dtype=np.int64), boxes[::-1]])
        if np.all(lam == 1.0):
            return Draw(lam=lam)
        return Draw(lam=lam, partner=partner, branch="input", layer="input", cut=cut if cut.any() else None,
                    boxes=boxes if cut.any() else None)

    def device_weights(self, draw: Draw, x: torch.Tensor) -> tuple[Lam, torch.Tensor | None]:
        # timm builds per-sample lam in the input's dtype before the targets cast it to float32: kept (the
        # float32 -> dtype rounding is the same on the device), so the targets match timm's to the bit for
        # bf16/fp16 inputs too. to_device copies through pinned memory: the step does not wait for the GPU.
        if isinstance(draw.lam, float):
            lam: Lam = draw.lam
        else:
            lam = to_device(np.asarray(draw.lam, dtype=np.float32), x.device).to(x.dtype).unsqueeze(1)
        partner = None if draw.partner is None else to_device(draw.partner, x.device)
        return lam, partner

    def apply(self, x: torch.Tensor, target: torch.Tensor, draw: Draw, lam: Lam,
              partner: torch.Tensor | None) -> torch.Tensor:
        if not draw.mixed:
            return x
        if isinstance(draw.lam, float):  # one lam and box for the batch: timm's in-place batch arithmetic
            if draw.cut is not None:
                y0, y1, x0, x1 = draw.boxes[0]
                x[:, :, y0:y1, x0:x1] = pair_with(x, partner)[:, :, y0:y1, x0:x1]
            else:
                partner_x = pair_with(x, partner).mul_(1.0 - draw.lam)
                x.mul_(draw.lam).add_(partner_x)
            return x
        source = x.clone()  # an unmodified copy to mix from, as in timm
        batch_size = x.shape[0]
        partners = range(batch_size - 1, -1, -1) if draw.partner is None else draw.partner.tolist()
        for i, j in enumerate(partners):
            lam_i = draw.lam[i]  # a NumPy float32, as timm's loop uses it
            if lam_i == 1.0:
                continue
            if draw.cut is not None and draw.cut[i]:
                y0, y1, x0, x1 = draw.boxes[i]
                x[i][:, y0:y1, x0:x1] = source[j][:, y0:y1, x0:x1]
            else:
                x[i] = x[i] * lam_i + source[j] * (1 - lam_i)
        return x
