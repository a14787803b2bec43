"""Boxes for localization: the evaluation transform's geometry, and PASCAL VOC XML files (ImageNet's boxes).

One convention throughout: ``(x0, y0, x1, y1)`` in continuous pixel coordinates, where pixel ``(col, row)``
covers ``[col, col + 1) x [row, row + 1)``; a box's area is ``(x1 - x0) * (y1 - y0)`` (torchvision's
``box_iou`` convention). A resize by a factor ``s`` with half-pixel centres (PIL, ``align_corners=False``)
maps ``x`` to ``s * x`` exactly in these coordinates, and a crop at ``left`` maps it to ``x - left``, so a
box follows the resize and centre crop of timm's evaluation transform without rounding. PASCAL VOC's
``xmin..xmax`` are 1-based inclusive pixel indices: ``[xmin - 1, xmax)`` here.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["BoxGeometry", "VOCAnnotation", "box_iou", "eval_geometry", "read_voc_xml", "transform_boxes"]


@dataclass(frozen=True)
class BoxGeometry:
    """An axis-aligned map of image coordinates, ``x' = scale_x * x + shift_x`` (likewise y), onto an
    output of ``width`` x ``height`` pixels."""

    scale_x: float
    scale_y: float
    shift_x: float
    shift_y: float
    width: int
    height: int

    def then(self, scale_x: float, scale_y: float, shift_x: float, shift_y: float, width: int,
             height: int) -> BoxGeometry:
        """This map followed by another."""
        return BoxGeometry(self.scale_x * scale_x, self.scale_y * scale_y, self.shift_x * scale_x + shift_x,
                           self.shift_y * scale_y + shift_y, width, height)


def _resized_size(size: int | tuple | list, max_size: int | None, width: int, height: int) -> tuple[int, int]:
    # torchvision's Resize output (width, height): an int (or one-element list) sets the shorter side, the longer
    # one is truncated (int()) in proportion; two values are (height, width). Re-stated from torchvision's
    # documented behaviour (its helper is private); tests compare it with the transform's real output.
    if isinstance(size, list | tuple) and len(size) == 2:
        return int(size[1]), int(size[0])
    short_target = int(size[0] if isinstance(size, list | tuple) else size)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = short_target, int(short_target * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if width <= height else (new_long, new_short)


def eval_geometry(transform: Callable, width: int, height: int) -> BoxGeometry:
    """Where a ``width`` x ``height`` image's pixels land after an evaluation transform.

    Reads the steps of a torchvision ``Compose`` as timm's ``create_transform(is_training=False)`` builds them:
    ``Resize`` (shorter side or both sides), ``CenterCrop`` (padding when the crop is larger, as torchvision
    does), and steps that do not move pixels (to-tensor, normalisation).

    Raises:
        ValueError: A step whose geometry is not known (a box could not follow it).
    """
    from torchvision import transforms as T

    steps = getattr(transform, "transforms", [transform])
    geom = BoxGeometry(1.0, 1.0, 0.0, 0.0, int(width), int(height))
    for step in steps:
        w, h = geom.width, geom.height
        if isinstance(step, T.Resize):
            nw, nh = _resized_size(step.size, step.max_size, w, h)
            geom = geom.then(nw / w, nh / h, 0.0, 0.0, nw, nh)
        elif isinstance(step, T.CenterCrop):
            ch, cw = (int(v) for v in step.size)
            pad_left = (cw - w) // 2 if cw > w else 0
            pad_top = (ch - h) // 2 if ch > h else 0
            pw = w + (pad_left + (cw - w + 1) // 2 if cw > w else 0)
            ph = h + (pad_top + (ch - h + 1) // 2 if ch > h else 0)
            left, top = int(round((pw - cw) / 2.0)), int(round((ph - ch) / 2.0))
            geom = geom.then(1.0, 1.0, pad_left - left, pad_top - top, cw, ch)
        elif type(step).__name__ in _NO_GEOMETRY:
            continue
        else:
            raise ValueError(f"evaluation transform step {step!r} moves pixels in a way boxes cannot follow: "
                             "localization supports Resize and CenterCrop (timm's centre-crop evaluation)")
    return geom


_NO_GEOMETRY = {"ToTensor", "PILToTensor", "MaybeToTensor", "MaybePILToTensor", "Normalize", "ConvertImageDtype",
                "ToDtype", "ToImage", "ToPureTensor", "Grayscale"}


def transform_boxes(boxes: torch.Tensor, geom: BoxGeometry) -> torch.Tensor:
    """Boxes (K, 4) mapped by ``geom`` and clipped to its output; boxes left without area are dropped."""
    b = boxes.to(torch.float64)
    scale = torch.tensor([geom.scale_x, geom.scale_y, geom.scale_x, geom.scale_y], dtype=torch.float64)
    shift = torch.tensor([geom.shift_x, geom.shift_y, geom.shift_x, geom.shift_y], dtype=torch.float64)
    b = b * scale + shift
    b[:, 0::2] = b[:, 0::2].clamp(0, geom.width)
    b[:, 1::2] = b[:, 1::2].clamp(0, geom.height)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[keep].to(torch.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (Na, Nb) of two sets of ``x0, y0, x1, y1`` boxes; 0 where the union is empty.

    torchvision's ``box_iou`` in NumPy (the tests compare the two): the localization sweep calls it twice per
    image on a few hundred boxes, where torch's per-call overhead dominated the whole evaluation.
    """
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    wh = (np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])).clip(0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class VOCAnnotation:
    """One PASCAL VOC XML file: the image size it was drawn on, and its objects' names and boxes."""

    path: Path
    width: int
    height: int
    names: list[str]
    boxes: torch.Tensor

    def boxes_of(self, name: str) -> torch.Tensor:
        """The boxes of the objects called ``name`` (K, 4)."""
        keep = [i for i, n in enumerate(self.names) if n == name]
        return self.boxes[keep] if keep else self.boxes[:0]


def read_voc_xml(path: str | os.PathLike) -> VOCAnnotation:
    """Reads a PASCAL VOC annotation (ImageNet's validation boxes use this format).

    Raises:
        ValueError: Not XML, no ``<size>``, or an object without a complete ``<bndbox>``.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path} is not a PASCAL VOC XML file: {e}") from None

    def number(node: ET.Element | None, tag: str, what: str) -> float:
        text = None if node is None else node.findtext(tag)
        try:
            return float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{path}: {what} has no numeric <{tag}> (got {text!r})") from None

    size = root.find("size")
    width, height = int(number(size, "width", "<size>")), int(number(size, "height", "<size>"))
    names, boxes = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        xmin, ymin = number(bb, "xmin", f"object {name!r}"), number(bb, "ymin", f"object {name!r}")
        xmax, ymax = number(bb, "xmax", f"object {name!r}"), number(bb, "ymax", f"object {name!r}")
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"{path}: object {name!r} has xmax < xmin or ymax < ymin")
        names.append(name)
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])  # 1-based inclusive -> continuous
    return VOCAnnotation(path, width, height, names, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
