"""SaliencyMix (mixkit.mix.saliencymix) against its authors' code (afm-shahab-uddin/SaliencyMix).

* tests/golden/saliencymix.npz holds what THEIR ``saliency_bbox`` and loop statements gave on fixed inputs and
  draws (benchmarks/golden_saliencymix.py): the OpenCV saliency map, the box, the mixed images, the corrected
  lam and the targets their loss implies. The method seeded the same way, fed the same map (both saliency
  sources: OpenCV's map itself, or a gradient whose saliency is that map), must give them exactly (targets
  to 1e-6). OpenCV's own map is compared where cv2 has its contrib modules.
* Live comparisons run their code when the fetched repository is there: on a real model's gradient saliency
  (their detector replaced by one returning it), and with OpenCV's saliency where cv2.saliency exists.
* The rest: boxes re-stated from their formula on hand-made saliency, and the errors.
"""

# ruff: noqa: NPY002

from __future__ import annotations

import ast
import copy
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixkit.mix import create_mixup
from mixkit.mix import saliencymix as module
from mixkit.timm_compat import MixupMethod, check_timm_mixup

GOLDEN = Path(__file__).parent / "golden" / "saliencymix.npz"
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
AUTHORS_REPO = Path("/work/.mirror/afm-shahab-uddin+SaliencyMix/repo")
NUM_CLASSES = 4


def _has_opencv_saliency() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "saliency")


def _golden() -> tuple[dict, dict]:
    g = np.load(GOLDEN)
    return {k: g[k] for k in g.files}, ast.literal_eval(str(g["settings"]))


def _golden_script() -> Any:
    sys.path.append(str(BENCHMARKS_DIR))
    try:
        import golden_saliencymix
    finally:
        sys.path.remove(str(BENCHMARKS_DIR))
    return golden_saliencymix


def _authors_settings(setting: dict) -> dict:
    """mixkit's arguments for their loop: one box per batch, a random permutation, their beta and prob."""
    return dict(mixup_alpha=setting["beta"], prob=setting["salmix_prob"], mode="batch", pairing="random",
                num_classes=NUM_CLASSES, label_smoothing=0.0)


def _mixkit_box(their_box: np.ndarray | tuple) -> list[int]:
    """Their (bbx1, bby1, bbx2, bby2), rows then columns, as mixkit's (y0, y1, x0, x1)."""
    bbx1, bby1, bbx2, bby2 = (int(v) for v in their_box)
    return [bbx1, bbx2, bby1, bby2]


class Net(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

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


# -- against the authors' code -----------------------------------------------------------------------------


def _check_against_golden(g: dict, case: str, index: int, out: torch.Tensor, target: torch.Tensor,
                          draw: Any) -> None:
    assert torch.equal(out, torch.from_numpy(g["out"][index]))
    np.testing.assert_allclose(target.numpy(), g[f"{case}/target"], rtol=0, atol=1e-6)
    if f"{case}/box" not in g:  # their `if` did not mix: neither does the method
        assert not draw.mixed and draw.lam == 1.0
        return
    np.testing.assert_array_equal(draw.partner, g[f"{case}/perm"])
    assert draw.boxes.tolist() == [_mixkit_box(g[f"{case}/box"])] * len(out)
    np.testing.assert_allclose(draw.lam, float(g[f"{case}/lam"]), rtol=0, atol=1e-7)  # float32 of their float


def _golden_cases() -> list[str]:
    return list(_golden()[1])


@pytest.mark.parametrize("case", _golden_cases())
def test_opencv_source_fed_their_map_gives_their_boxes_images_and_targets(case: str, monkeypatch) -> None:
    """saliency='opencv', seeded as their run, OpenCV's map replaced by the one their code computed: the
    method must ask for the saliency of the same image (their ``images[rand_index[0]]``) and give their mix."""
    g, settings = _golden()
    x, y = torch.from_numpy(g["x"]), torch.from_numpy(g["y"])
    calls = []

    def their_map(images: torch.Tensor) -> np.ndarray:
        calls.append(images)
        assert torch.equal(images, x[int(g[f"{case}/perm"][0])].unsqueeze(0))
        return g[f"{case}/saliency"][None]

    monkeypatch.setattr(module, "_cv2_saliency", lambda: None)  # no opencv-contrib needed for the fed map
    monkeypatch.setattr(module, "opencv_saliency", their_map)
    with create_mixup("saliencymix", saliency="opencv", **_authors_settings(settings[case])) as mix:
        np.random.seed(settings[case]["seed"])
        out, target = mix(x.clone(), y)
        _check_against_golden(g, case, list(settings).index(case), out, target, mix.last_draw)
    assert len(calls) == (f"{case}/box" in g)


@pytest.mark.parametrize("case", _golden_cases())
def test_gradient_source_with_their_map_as_saliency_gives_their_mix(case: str, monkeypatch) -> None:
    """The default gradient source, its input gradient replaced by one whose saliency (|grad| max over
    channels) is their map on the source image and zero elsewhere: the same boxes, images and targets."""
    g, settings = _golden()
    x, y = torch.from_numpy(g["x"]), torch.from_numpy(g["y"])
    grad = torch.zeros_like(x)
    if f"{case}/box" in g:
        grad[int(g[f"{case}/perm"][0])] = -torch.from_numpy(g[f"{case}/saliency"]).float()
    monkeypatch.setattr(module, "input_gradient", lambda *a, **k: (grad, None))
    with create_mixup("saliencymix", model=Net(NUM_CLASSES), **_authors_settings(settings[case])) as mix:
        np.random.seed(settings[case]["seed"])
        out, target = mix(x.clone(), y)
        _check_against_golden(g, case, list(settings).index(case), out, target, mix.last_draw)


@pytest.mark.skipif(not _has_opencv_saliency(), reason="cv2 has no saliency module (opencv-contrib)")
def test_opencv_saliency_gives_the_map_their_code_computed() -> None:
    g, settings = _golden()
    x = torch.from_numpy(g["x"])
    for case in settings:
        if f"{case}/saliency" in g:
            source = int(g[f"{case}/perm"][0])
            np.testing.assert_array_equal(module.opencv_saliency(x[source:source + 1])[0], g[f"{case}/saliency"])


needs_authors = pytest.mark.skipif(not (AUTHORS_REPO.is_dir() and shutil.which("git")),
                                   reason="the authors' repository is not fetched (fetch github:afm-shahab-uddin/SaliencyMix)")


class MapDetector:
    """A detector for their code that returns a given saliency of each image of the batch, scaled to a maximum
    of 1 so that their uint8 quantisation keeps the arg-max (only the maximum itself becomes 255)."""

    def __init__(self, images: torch.Tensor, saliency: torch.Tensor) -> None:
        self.images, self.saliency = images, saliency

    def __call__(self) -> MapDetector:
        return self

    def computeSaliency(self, image: np.ndarray) -> tuple[bool, np.ndarray]:  # noqa: N802  (OpenCV's name)
        index = [i for i, x in enumerate(self.images) if np.array_equal(x.numpy().transpose(1, 2, 0), image)]
        saliency = self.saliency[index[0]]
        return True, (saliency / saliency.max()).numpy()


@needs_authors
def test_live_against_the_authors_code_on_a_models_gradient_saliency() -> None:
    """Their loop statements on a model's gradient saliency (computed here: |d CE / d x| max over channels, the
    model in training mode), against the default method on the same model, seeds and odd batch of non-square
    images; seeds that mix and that do not."""
    golden = _golden_script()
    authors = golden.load_authors(AUTHORS_REPO)
    torch.manual_seed(0)
    model = Net(NUM_CLASSES).train()
    x, y = torch.randn(7, 3, 10, 14), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    inputs = x.clone().requires_grad_(True)
    F.cross_entropy(copy.deepcopy(model)(inputs), y).backward()
    detector = MapDetector(x, inputs.grad.abs().amax(1))
    mixed = 0
    for seed in range(8):
        np.random.seed(seed)
        theirs = golden.authors_mix(authors, x.clone(), y.clone(), detector=detector, **golden.AUTHORS_DEFAULTS)
        with create_mixup("saliencymix", model=model, **_authors_settings(golden.AUTHORS_DEFAULTS)) as mix:
            np.random.seed(seed)
            out, target = mix(x.clone(), y)
        assert torch.equal(out, theirs.images)
        expected = golden.soft_targets(y.numpy(), theirs.labels_b.numpy(), theirs.lam)
        np.testing.assert_allclose(target.numpy(), expected, rtol=0, atol=1e-6)
        if theirs.mixed:
            mixed += 1
            assert mix.last_draw.boxes.tolist() == [_mixkit_box(theirs.box)] * 7
            np.testing.assert_array_equal(mix.last_draw.partner, theirs.perm)
    assert 0 < mixed < 8


@needs_authors
@pytest.mark.skipif(not _has_opencv_saliency(), reason="cv2 has no saliency module (opencv-contrib)")
def test_live_against_the_authors_code_with_opencv_saliency() -> None:
    """Their code with OpenCV's saliency against saliency='opencv' on random normalised images and seeds."""
    golden = _golden_script()
    authors = golden.load_authors(AUTHORS_REPO)
    torch.manual_seed(1)
    x, y = torch.randn(6, 3, 16, 12), torch.tensor([0, 1, 2, 3, 0, 1])
    for seed in range(8):
        np.random.seed(seed)
        theirs = golden.authors_mix(authors, x.clone(), y.clone(), **golden.AUTHORS_DEFAULTS)
        with create_mixup("saliencymix", saliency="opencv", **_authors_settings(golden.AUTHORS_DEFAULTS)) as mix:
            np.random.seed(seed)
            out, target = mix(x.clone(), y)
        assert torch.equal(out, theirs.images)
        expected = golden.soft_targets(y.numpy(), theirs.labels_b.numpy(), theirs.lam)
        np.testing.assert_allclose(target.numpy(), expected, rtol=0, atol=1e-6)


# -- bad input through mixkit-train (a model without input gradients: tests/test_mix_saliency.py) -------------


@pytest.mark.parametrize(("extra", "message"), [
    (["--cutmix", "1.0"], r"--mixup saliencymix: saliencymix draws its own patch.*--cutmix 0"),
    # mixkit-train's own size check comes first (SaliencyMix's, 2 x 2, is checked on the API above)
    (["--img-size", "4"], r"--img-size 4 is smaller .*use --img-size >= 8"),
], ids=["cutmix", "too-small"])
def test_mixkit_train_refuses_bad_saliencymix_input_naming_the_fix(extra: list[str], message: str, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    from train_fixtures import main_in_process, make_image_folder, tiny_args

    data = make_image_folder(tmp_path / "data", train_per_class=2, val_per_class=1)
    assert main_in_process(tiny_args(data, tmp_path / "out", "--mixup", "saliencymix", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixkit-train: error: ") and re.search(message, err, re.DOTALL), err
