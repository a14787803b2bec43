"""Boxes from CAMs and the WSOL metrics (Choe et al. 2020) on hand-built maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixkit.eval.localization import LocalizationMetrics, boxes_from_cam, cam_thresholds, localize


def test_threshold_sweep():
    np.testing.assert_allclose(cam_thresholds(0.25), [0, 0.25, 0.5, 0.75])
    t = cam_thresholds()
    assert len(t) == 100 and t[0] == 0 and t[-1] == pytest.approx(0.99)
    assert len(cam_thresholds(0.001)) == 1000  # wsolevaluation's sweep
    with pytest.raises(ValueError, match="interval must be in"):
        cam_thresholds(0)


def test_largest_component_box_by_hand():
    cam = np.zeros((10, 12))
    cam[1:3, 1:3] = 0.9       # 4 pixels, brightest
    cam[5:9, 4:11] = 0.6      # 28 pixels
    cam[0, 11] = 1.0          # the maximum, 1 pixel
    largest, every = boxes_from_cam(cam, [0.0, 0.5, 0.7, 0.95])
    # tau 0: the whole map; 0.5: the big blob (largest of three); 0.7: the 2 x 2 square; 0.95: the single pixel.
    assert largest.tolist() == [[0, 0, 12, 10], [4, 5, 11, 9], [1, 1, 3, 3], [11, 0, 12, 1]]
    assert len(every[1]) == 3 and len(every[2]) == 2 and len(every[3]) == 1
    # Diagonal neighbours join a component (8-connectivity, as contours do).
    diag = np.eye(5)
    assert boxes_from_cam(diag, [0.5])[0].tolist() == [[0, 0, 5, 5]]
    # An empty mask gives an empty box.
    assert boxes_from_cam(np.zeros((4, 4)), [0.5])[0].tolist() == [[0, 0, 0, 0]]


def test_against_scikit_image_regionprops():
    """The largest component's box agrees with skimage.measure (an independent labelling), on smooth maps."""
    measure = pytest.importorskip("skimage.measure")
    from mixkit.eval.cam import normalize_cams, upsample_cams

    torch.manual_seed(0)
    cams = normalize_cams(upsample_cams(torch.randn(6, 7, 7), (56, 56))).numpy()
    thresholds = cam_thresholds(0.05)
    for cam in cams:
        largest, _ = boxes_from_cam(cam, thresholds)
        for tau, box in zip(thresholds, largest, strict=True):
            props = measure.regionprops(measure.label(cam >= tau, connectivity=2))
            if not props:
                assert box.tolist() == [0, 0, 0, 0]
                continue
            areas = [p.area for p in props]
            r0, c0, r1, c1 = props[int(np.argmax(areas))].bbox
            if areas.count(max(areas)) == 1:  # ties may be broken differently
                assert box.tolist() == [c0, r0, c1, r1]


def test_a_cam_with_a_known_box_gives_iou_one():
    cam = np.zeros((16, 20))
    cam[3:12, 5:18] = 1.0
    m = LocalizationMetrics(cam_thresholds(0.1))
    _, ious = m.update(cam, torch.tensor([[5.0, 3, 18, 12]]), correct=True, heldout=False)
    assert ious[0] == pytest.approx(13 * 9 / (16 * 20))  # tau 0: the whole map
    np.testing.assert_allclose(ious[1:], 1.0)
    out = m.compute()
    assert out["max_box_acc"] == 100 and out["best_threshold"] == pytest.approx(0.1)


def _nested(inner, outer, size=(20, 20)) -> np.ndarray:
    # 1 inside ``inner``, 0.5 in the rest of ``outer``, 0 elsewhere (boxes as x0, y0, x1, y1).
    cam = np.zeros(size)
    cam[outer[1]:outer[3], outer[0]:outer[2]] = 0.5
    cam[inner[1]:inner[3], inner[0]:inner[2]] = 1.0
    return cam


def test_metrics_on_a_constructed_case():
    inner, outer = (8, 8, 12, 12), (4, 4, 16, 16)
    cam = _nested(inner, outer)
    a, b = torch.tensor([inner], dtype=torch.float32), torch.tensor([outer], dtype=torch.float32)
    m = LocalizationMetrics(cam_thresholds(0.25))  # 0, 0.25, 0.5, 0.75
    # At tau 0 the box is the whole map (IoU with b: 144 / 400 < 0.5), at 0.25 and 0.5 it is b, at 0.75 it is a.
    m.update(cam, b, correct=True, heldout=True)     # held out: hits at 0.25 and 0.5
    m.update(cam, a, correct=True, heldout=False)    # hit at 0.75
    m.update(cam, b, correct=False, heldout=False)   # hits at 0.25 and 0.5, wrong class
    m.update(cam, b, correct=True, heldout=False)    # hits at 0.25 and 0.5
    out = m.compute()
    np.testing.assert_allclose(out["gt_known_per_threshold"], [0, 200 / 3, 200 / 3, 100 / 3])
    np.testing.assert_allclose(out["top1_loc_per_threshold"], [0, 100 / 3, 100 / 3, 100 / 3])
    assert out["max_box_acc"] == pytest.approx(200 / 3) and out["best_threshold"] == 0.25
    assert out["top1_loc_at_best"] == pytest.approx(100 / 3)
    # The held-out image prefers 0.25 (the first of its two best): the operating point on the test images.
    assert out["chosen_threshold"] == 0.25 and out["threshold_chosen_on"] == "held-out"
    assert out["gt_known_loc"] == pytest.approx(200 / 3) and out["top1_loc"] == pytest.approx(100 / 3)
    assert out["heldout_gt_known_loc"] == 100
    assert out["top1"] == pytest.approx(200 / 3) and (out["num_test"], out["num_heldout"]) == (3, 1)


def test_held_out_choice_differs_from_the_test_optimum():
    inner, outer = (8, 8, 12, 12), (4, 4, 16, 16)
    cam = _nested(inner, outer)
    a, b = torch.tensor([inner], dtype=torch.float32), torch.tensor([outer], dtype=torch.float32)
    m = LocalizationMetrics(cam_thresholds(0.25))
    m.update(cam, a, correct=True, heldout=True)  # the held-out image wants 0.75
    for _ in range(3):
        m.update(cam, b, correct=True, heldout=False)  # the test images want 0.25 / 0.5
    out = m.compute()
    assert out["max_box_acc"] == 100 and out["chosen_threshold"] == 0.75 and out["gt_known_loc"] == 0


def test_max_box_acc_v2_counts_any_component():
    # The largest component is a distractor; the true object is the small blob: MaxBoxAcc 0, V2 at IoU 0.5 100%.
    cam = np.zeros((20, 20))
    cam[0:10, 0:10] = 1.0
    cam[15:18, 15:18] = 1.0
    m = LocalizationMetrics(cam_thresholds(0.25))
    m.update(cam, torch.tensor([[15.0, 15, 18, 18]]), correct=True, heldout=False)
    out = m.compute()
    assert out["max_box_acc"] == 0
    assert out["max_box_acc_v2_per_iou"] == {"30": 100.0, "50": 100.0, "70": 100.0}
    assert out["max_box_acc_v2"] == 100


def test_no_test_image_is_an_error():
    m = LocalizationMetrics(cam_thresholds(0.5))
    m.update(np.ones((4, 4)), torch.tensor([[0.0, 0, 4, 4]]), correct=True, heldout=True)
    with pytest.raises(ValueError, match="lower --loc-holdout"):
        m.compute()
    with pytest.raises(ValueError, match="without a true box"):
        m.update(np.ones((4, 4)), torch.zeros(0, 4), correct=True, heldout=False)


class _Bright(torch.nn.Module):
    """A timm-style model whose CAM for either class is the image itself: 1 channel, avg pool, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [2.0]]))
            self.fc.bias.zero_()

    def get_classifier(self):
        return self.fc

    def forward_features(self, x):
        return x

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))


def test_localize_holds_out_the_first_images_of_each_class_and_skips_boxless_ones():
    x = torch.zeros(6, 1, 16, 16)
    x[:, :, 4:10, 2:12] = 1.0  # the object: CAM = the image, so its box is exact at every tau > 0
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    box = torch.tensor([[2.0, 4, 12, 10]])
    boxes = [box, box, torch.tensor([[0.0, 0, 2, 2]]), box, torch.zeros(0, 4), box]
    result = localize(_Bright(), [(x[:3], y[:3], boxes[:3]), (x[3:], y[3:], boxes[3:])], mean=[0.0], std=[1.0],
                      holdout_per_class=1, interval=0.5)
    m = result.metrics
    # Held out: images 0 (class 0) and 1 (class 1); skipped: image 4; scored: 2 (wrong box), 3 and 5.
    assert (m["num_heldout"], m["num_test"], result.skipped_no_box) == (2, 3, 1)
    assert m["gt_known_per_threshold"] == pytest.approx([0, 200 / 3])
    # Class 1 has the larger weight, so the arg-max is 1 for every image: only image 3 is right.
    assert m["top1"] == pytest.approx(100 / 3) and m["top1_loc"] == pytest.approx(100 / 3)
    assert [s.label for s in result.samples] == [0, 1, 0]
