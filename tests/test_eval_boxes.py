"""Box geometry of the evaluation transform (hand-computed cases and painted images), IoU, VOC XML files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T

from mixkit.eval.boxes import box_iou, eval_geometry, read_voc_xml, transform_boxes


def _timm_eval(img_size: int, crop_pct: float, interpolation: str = "bilinear"):
    return create_transform(img_size, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_resize_and_centre_crop_by_hand():
    # 200 x 100 image, 64 px at crop_pct 0.8: resize the shorter side to floor(64 / 0.8) = 80, so the image is
    # 160 x 80 (scale 0.8); the 64 px crop starts at left = (160 - 64) / 2 = 48, top = (80 - 64) / 2 = 8.
    geom = eval_geometry(_timm_eval(64, 0.8), 200, 100)
    assert (geom.scale_x, geom.scale_y, geom.shift_x, geom.shift_y) == (0.8, 0.8, -48.0, -8.0)
    assert (geom.width, geom.height) == (64, 64)
    # x: 60 * 0.8 - 48 = 0, 140 * 0.8 - 48 = 64; y: 20 * 0.8 - 8 = 8, 90 * 0.8 - 8 = 64.
    out = transform_boxes(torch.tensor([[60.0, 20, 140, 90]]), geom)
    assert out.tolist() == [[0.0, 8.0, 64.0, 64.0]]
    # A box reaching past the crop is clipped; one entirely outside is dropped.
    out = transform_boxes(torch.tensor([[0.0, 0, 70, 50], [0, 0, 50, 50]]), geom)
    assert out.tolist() == [[0.0, 0.0, 8.0, 32.0]]


def test_truncated_long_side_and_rounded_crop_by_hand():
    # 101 x 75 image, 32 px at 0.875: floor(32 / 0.875) = 36; the long side is int(36 * 101 / 75) = int(48.48) = 48,
    # so x scales by 48 / 101 and y by 36 / 75; crop at left = round(16 / 2) = 8, top = round(4 / 2) = 2.
    geom = eval_geometry(_timm_eval(32, 0.875), 101, 75)
    assert geom.scale_x == pytest.approx(48 / 101) and geom.scale_y == pytest.approx(0.48)
    assert (geom.shift_x, geom.shift_y) == (-8.0, -2.0)
    out = transform_boxes(torch.tensor([[10.0, 10, 60, 50]]), geom)
    assert out[0].tolist() == pytest.approx([0.0, 2.8, 60 * 48 / 101 - 8, 22.0], abs=1e-5)


def test_portrait_image_and_a_crop_larger_than_the_image_by_hand():
    # Portrait 30 x 90 at 24 px, crop_pct 1: width -> 24, height int(24 * 90 / 30) = 72; crop top = 24.
    geom = eval_geometry(_timm_eval(24, 1.0), 30, 90)
    assert (geom.scale_x, geom.scale_y, geom.shift_x, geom.shift_y) == (0.8, 0.8, 0.0, -24.0)
    # torchvision pads a crop larger than the image: 20 x 10 cropped to 16 pads 3 rows above and below, and the
    # 16 columns start at round((20 - 16) / 2) = 2.
    geom = eval_geometry(T.Compose([T.CenterCrop(16)]), 20, 10)
    assert (geom.shift_x, geom.shift_y, geom.width, geom.height) == (-2.0, 3.0, 16, 16)
    assert transform_boxes(torch.tensor([[2.0, 0, 20, 10]]), geom).tolist() == [[0.0, 3.0, 16.0, 13.0]]


@pytest.mark.parametrize("size, img_size, crop_pct", [((200, 100), 64, 0.8), ((101, 75), 32, 0.875),
                                                      ((57, 131), 48, 0.95), ((64, 64), 40, 1.0),
                                                      ((90, 37), 56, 0.9)])
def test_geometry_matches_the_transformed_pixels(size, img_size, crop_pct):
    """A white rectangle painted on the image lands where the box says, after timm's real transform.

    With nearest-neighbour resizing an output pixel j is white when its centre maps into the rectangle:
    ``x0 <= (j + 0.5) / s < x1``; so the painted area's edges are within half a pixel of the mapped box."""
    w, h = size
    rng = np.random.default_rng(img_size)
    transform = _timm_eval(img_size, crop_pct, interpolation="nearest")
    for _ in range(5):
        x0, x1 = sorted(rng.choice(np.arange(w + 1), 2, replace=False))
        y0, y1 = sorted(rng.choice(np.arange(h + 1), 2, replace=False))
        pixels = np.zeros((h, w, 3), dtype=np.uint8)
        pixels[y0:y1, x0:x1] = 255
        out = transform(Image.fromarray(pixels))[0].numpy() > 0.5
        assert out.shape == (img_size, img_size)
        mapped = transform_boxes(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32),
                                 eval_geometry(transform, w, h))
        if not out.any():  # the rectangle fell outside the crop (or between pixel centres)
            assert len(mapped) == 0 or ((mapped[0, 2:] - mapped[0, :2]) <= 1).any()
            continue
        rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
        painted = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        assert mapped[0].tolist() == pytest.approx(painted, abs=0.5 + 1e-4)


def test_unknown_transform_step_is_refused():
    with pytest.raises(ValueError, match="boxes cannot follow"):
        eval_geometry(T.Compose([T.RandomRotation(10)]), 10, 10)


def test_iou_by_hand_and_against_torchvision():
    from torchvision.ops import box_iou as tv_box_iou

    a = np.array([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    b = np.array([[1.0, 1, 3, 3], [5, 5, 5, 9]])  # the second has no area
    iou = box_iou(a, b)
    assert iou[0, 0] == pytest.approx(1 / 7) and iou[1, 0] == 0 and (iou[:, 1] == 0).all()
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (2, 30, 2))
    boxes = [np.concatenate([p, p + rng.uniform(0.5, 30, p.shape)], 1) for p in xy]
    expected = tv_box_iou(torch.from_numpy(boxes[0]), torch.from_numpy(boxes[1])).numpy()
    np.testing.assert_allclose(box_iou(*boxes), expected, rtol=1e-12)


VOC = """<annotation><filename>x</filename><size><width>500</width><height>375</height><depth>3</depth></size>
<object><name>n01440764</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>300</xmax><ymax>200</ymax></bndbox></object>
<object><name>n01440764</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>500</xmax><ymax>375</ymax></bndbox></object>
<object><name>n02102040</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>7</xmax><ymax>8</ymax></bndbox></object>
</annotation>"""


def test_voc_xml_reader(tmp_path: Path):
    path = tmp_path / "a.xml"
    path.write_text(VOC)
    ann = read_voc_xml(path)
    assert (ann.width, ann.height) == (500, 375)
    # VOC's 1-based inclusive pixels 11..300 are the continuous span [10, 300).
    assert ann.boxes_of("n01440764").tolist() == [[10.0, 20.0, 300.0, 200.0], [0.0, 0.0, 500.0, 375.0]]
    assert ann.boxes_of("n02102040").tolist() == [[4.0, 5.0, 7.0, 8.0]]
    assert ann.boxes_of("n09999999").shape == (0, 4)


@pytest.mark.parametrize("text, match", [("<annotation><size>", "not a PASCAL VOC XML"),
                                         ("<annotation></annotation>", "<size> has no numeric <width>"),
                                         (VOC.replace("<xmax>300</xmax>", ""), "no numeric <xmax>"),
                                         (VOC.replace("<xmax>300</xmax>", "<xmax>3</xmax>"), "xmax < xmin")])
def test_bad_voc_xml(tmp_path: Path, text: str, match: str):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_voc_xml(path)
