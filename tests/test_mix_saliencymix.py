"""SaliencyMix (mixkit.mix.saliencymix): boxes re-stated from the authors' formula (afm-shahab-uddin/SaliencyMix
``saliency_bbox``) on hand-made saliency, and its errors."""

# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mixkit.mix import create_mixup
from mixkit.mix import saliencymix as module
from mixkit.timm_compat import MixupMethod, check_timm_mixup


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 3
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def authors_box(peak: tuple[int, int], lam: float, h: int, w: int) -> tuple[int, int, int, int]:
    """The authors' saliency_bbox arithmetic, re-stated: (rows, cols) = (bbx, bby)."""
    cut_rat = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut_rat), int(w * cut_rat)
    x, y = peak
    return (int(np.clip(x - cut_h // 2, 0, h)), int(np.clip(x + cut_h // 2, 0, h)),
            int(np.clip(y - cut_w // 2, 0, w)), int(np.clip(y + cut_w // 2, 0, w)))


def test_batch_box_is_centred_on_the_first_source_peak_and_lam_is_area_corrected() -> None:
    x = torch.zeros(4, 3, 10, 12)
    x[3, 1, 2, 9] = 5.0  # the source of sample 0 under the flip pairing is sample 3: its peak (2, 9)
    peaks = module.saliency_peaks(x.abs().amax(1))
    assert peaks[3].tolist() == [2, 9]
    with create_mixup("saliencymix", model=Net(), num_classes=3, prob=1.0, label_smoothing=0.0) as mix:
        mix._source_saliency_peaks = lambda x, t, sources: module.saliency_peaks(x.abs().amax(1)[sources])
        np.random.seed(0)
        out, target = mix(x.clone() + torch.arange(4.0).view(4, 1, 1, 1), torch.tensor([0, 1, 2, 0]))
        draw = mix.last_draw
    np.random.seed(0)
    np.random.rand()
    lam = np.random.beta(1.0, 1.0)
    y0, y1, x0, x1 = authors_box((2, 9), lam, 10, 12)
    assert draw.boxes.tolist() == [[y0, y1, x0, x1]] * 4
    assert draw.lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 120)
    assert torch.all(out[0, :, y0:y1, x0:x1] == x[3, :, y0:y1, x0:x1] + 3)


def test_cutmix_and_missing_opencv_are_refused_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"--mixup saliencymix: .*--cutmix 0.*mixup_alpha"):
        check_timm_mixup({"mixup_alpha": MixupMethod("saliencymix"), "cutmix_alpha": 1.0})
    import cv2
    if not hasattr(cv2, "saliency"):
        with pytest.raises(ImportError, match="opencv-contrib"):
            create_mixup("saliencymix", model=Net(), num_classes=3, saliency="opencv")
    with pytest.raises(ValueError, match="at least 2 x 2"):
        with create_mixup("saliencymix", model=Net(), num_classes=3) as mix:
            mix(torch.zeros(2, 3, 1, 1), torch.tensor([0, 1]))
