"""CUB-200-2011 in its own layout: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``,
``bounding_boxes.txt`` (optional ``classes.txt``) and ``images/<class folder>/<file>``.

The reader checks that every file lists the same image ids, and names the file and line of anything else;
boxes are returned as ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the original image (CUB's
``x y width height`` are floats on the same grid: ``x1 = x + width``). ``cub_index`` gives one split as a
``mixkit.data.ImageFolderIndex``, so the 'torch' loader backend reads it with timm's transforms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CUB_FILES", "CUBRecords", "cub_index", "read_cub"]

CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")
"""The metadata files of the layout (``bounding_boxes.txt`` only for localization)."""


@dataclass(frozen=True)
class CUBRecords:
    """The images of a CUB-layout folder, in ``images.txt`` order.

    Attributes:
        root: The dataset folder (holding ``images.txt`` and ``images/``).
        ids: CUB's image ids.
        paths: Image files.
        labels: Class indices from 0 (CUB's class id minus 1).
        is_train: True for the training split (``train_test_split.txt``).
        boxes: (N, 4) float ``x0, y0, x1, y1`` in pixels of the original image; None when not read.
        classes: Class names (``classes.txt``, else each class's image folder name).
    """

    root: Path
    ids: list[int]
    paths: list[Path]
    labels: np.ndarray
    is_train: np.ndarray
    boxes: np.ndarray | None
    classes: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def split(self, train: bool) -> np.ndarray:
        """Positions of the training (``train=True``) or test images."""
        return np.flatnonzero(self.is_train == train)


def _read_table(path: Path, columns: int) -> dict[int, list[str]]:
    # "<image id> <value> ...": one row per image id; paths may not hold spaces in CUB, values never do.
    rows: dict[int, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != columns + 1:
            raise ValueError(f"{path}, line {n}: expected an image id and {columns} value(s), got {line!r}")
        try:
            key = int(parts[0])
        except ValueError:
            raise ValueError(f"{path}, line {n}: the image id {parts[0]!r} is not an integer") from None
        if key in rows:
            raise ValueError(f"{path}, line {n}: image id {key} is listed twice")
        rows[key] = parts[1:]
    if not rows:
        raise ValueError(f"{path} is empty: a CUB-200-2011 metadata file lists one image per line")
    return rows


def read_cub(root: str | os.PathLike, *, boxes: bool = False, check_images: bool = True) -> CUBRecords:
    """Reads a CUB-200-2011 folder.

    Args:
        root: The folder holding ``images.txt`` and ``images/`` (``CUB_200_2011``).
        boxes: Also read ``bounding_boxes.txt`` (one box per image).
        check_images: Check that every listed image file exists.

    Raises:
        FileNotFoundError: The folder, a metadata file or listed images are missing (the message names them).
        ValueError: A malformed line, or files that list different image ids.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CUB folder {root} does not exist: pass --data-dir CUB_200_2011 (the folder with "
                                "images.txt and images/)")
    needed = CUB_FILES if boxes else CUB_FILES[:3]
    missing = [name for name in needed if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not in CUB-200-2011's layout: {', '.join(missing)} missing (it needs "
                                f"{', '.join(needed)} and images/)")
    images = _read_table(root / "images.txt", 1)
    tables = {"image_class_labels.txt": _read_table(root / "image_class_labels.txt", 1),
              "train_test_split.txt": _read_table(root / "train_test_split.txt", 1)}
    if boxes:
        tables["bounding_boxes.txt"] = _read_table(root / "bounding_boxes.txt", 4)
    ids = list(images)
    for name, table in tables.items():
        if set(table) != set(ids):
            extra, lacking = sorted(set(table) - set(ids)), sorted(set(ids) - set(table))
            raise ValueError(f"{root / name} does not list the image ids of images.txt: "
                             f"{len(lacking)} missing (first {lacking[:5]}), {len(extra)} unknown (first {extra[:5]})")
    labels_table, split_table = tables["image_class_labels.txt"], tables["train_test_split.txt"]
    try:
        class_ids = np.array([int(labels_table[i][0]) for i in ids], dtype=np.int64)
        split = [split_table[i][0] for i in ids]
        box = None if not boxes else np.array([[float(v) for v in tables["bounding_boxes.txt"][i]] for i in ids])
    except ValueError as e:
        raise ValueError(f"{root}: a class id, split flag or box value is not a number ({e})") from None
    if any(s not in ("0", "1") for s in split):
        raise ValueError(f"{root / 'train_test_split.txt'}: the split flag must be 1 (training) or 0 (test)")
    num_classes = int(class_ids.max())
    if class_ids.min() < 1 or len(np.unique(class_ids)) != num_classes:
        raise ValueError(f"{root / 'image_class_labels.txt'}: class ids must run from 1 to the number of classes "
                         f"with every class used, got {len(np.unique(class_ids))} distinct ids in "
                         f"[{class_ids.min()}, {num_classes}]")
    if box is not None:
        if (box[:, 2:] <= 0).any() or (box[:, :2] < 0).any():
            bad = ids[int(np.flatnonzero((box[:, 2:] <= 0).any(1) | (box[:, :2] < 0).any(1))[0])]
            raise ValueError(f"{root / 'bounding_boxes.txt'}: image {bad} has a box with a negative corner or a "
                             "non-positive width/height (CUB's boxes are x y width height)")
        box[:, 2:] += box[:, :2]
    paths = [root / "images" / images[i][0] for i in ids]
    if check_images:
        absent = [p for p in paths if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} image(s) of {root / 'images.txt'} missing under "
                                    f"{root / 'images'}: {', '.join(str(p) for p in absent[:5])}")
    labels = class_ids - 1
    names = _class_names(root, paths, labels, num_classes)
    return CUBRecords(root, ids, paths, labels, np.array([s == "1" for s in split]), box, names)


def _class_names(root: Path, paths: list[Path], labels: np.ndarray, num_classes: int) -> list[str]:
    listed = root / "classes.txt"
    if listed.is_file():
        table = _read_table(listed, 1)
        if sorted(table) == list(range(1, num_classes + 1)):
            return [table[i][0] for i in range(1, num_classes + 1)]
    names = [""] * num_classes
    for p, y in zip(paths, labels, strict=True):
        names[y] = names[y] or p.parent.name
    return names


def cub_index(records: CUBRecords, train: bool):
    """One split of a CUB folder as a ``mixkit.data.ImageFolderIndex`` (for ``create_loader('torch', ...)``)."""
    from ..data.imagefolder import ImageFolderIndex

    keep = records.split(train)
    if len(keep) == 0:
        raise ValueError(f"{records.root / 'train_test_split.txt'} marks no image as "
                         f"{'training (1)' if train else 'test (0)'}")
    classes = list(records.classes)
    samples = [(str(records.paths[i]), int(records.labels[i])) for i in keep]
    return ImageFolderIndex(records.root / "images", classes, {c: i for i, c in enumerate(classes)}, samples)
