"""Images with their true boxes, after the evaluation transform: CUB-200-2011, ImageNet (VOC XML), Placed
Fashion-MNIST; and the classification test sets of runs trained on CUB or Placed Fashion-MNIST.

Files are read as ``mixkit.data`` reads them (``load_rgb``) and transformed by timm's evaluation transform
(``create_transform(is_training=False)``: resize to ``img_size / crop_pct``, centre crop; mean 0, std 1, so the
pixels stay in [0, 1]); each image's boxes follow that very transform (``mixkit.eval.boxes.eval_geometry``).
Boxes cropped away entirely leave the image without a box: it is counted and not scored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .boxes import eval_geometry, read_voc_xml, transform_boxes
from .data import _LUMA, EvalData, _is_class_folder_root, _TensorBatches, find_val_split

__all__ = ["CUB", "DEFAULT_HOLDOUT", "IMAGENET", "LOCALIZATION_SETS", "PLACED", "BoxedImages",
           "LocalizationData", "cub_localization", "cub_test", "imagenet_localization", "placed_localization",
           "placed_root", "placed_test"]

CUB, IMAGENET, PLACED = "cub", "imagenet", "placed"
LOCALIZATION_SETS = (CUB, IMAGENET, PLACED)
PLACED_DATASET = "placed_fashion_mnist"
"""mixkit-train's --dataset name of Placed Fashion-MNIST (``--localization placed`` evaluates its test split)."""
DEFAULT_HOLDOUT = {CUB: 5, IMAGENET: 10, PLACED: 10}
"""Held-out images per class for the threshold choice: the size of wsolevaluation's train-fullsup split
(5 per class for CUB, 10 for ImageNet), taken here from the evaluated split."""


@dataclass
class LocalizationData:
    """Batches of (pixels in [0, 1], classes, true boxes per image in input pixels) and what they are."""

    batches: Iterable[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]
    num_samples: int
    num_batches: int
    source: str
    classes: list[str] | None = None


class BoxedImages(Dataset):
    """Image files with classes and boxes (original pixels), through an evaluation transform.

    Args:
        paths: Image files.
        labels: Class per image.
        boxes: (K, 4) boxes per image in its original pixels (``x0, y0, x1, y1``).
        transform: torchvision transform of a PIL image (timm's evaluation transform).
        in_chans: 3, or 1 (ITU-R 601 luma, as ``mixkit.eval.data`` reads greyscale models' inputs).
        annotated_sizes: The (width, height) each image's boxes were drawn on, when known (VOC's ``<size>``):
            boxes are rescaled to the file's actual size (for resized copies of a dataset).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], labels: Sequence[int], boxes: Sequence[torch.Tensor],
                 transform, *, in_chans: int = 3, annotated_sizes: Sequence[tuple[int, int]] | None = None) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"image files are read as RGB: in_chans must be 1 or 3, got {in_chans}")
        self.paths, self.labels, self.boxes = list(paths), list(labels), list(boxes)
        self.transform, self.in_chans, self.annotated_sizes = transform, in_chans, annotated_sizes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        from ..data.imagefolder import load_rgb

        img = load_rgb(self.paths[i])
        w, h = img.size
        boxes = self.boxes[i].to(torch.float64)
        if self.annotated_sizes is not None:
            aw, ah = self.annotated_sizes[i]
            boxes = boxes * torch.tensor([w / aw, h / ah, w / aw, h / ah], dtype=torch.float64)
        x = self.transform(img)
        if self.in_chans == 1:
            x = (x * torch.tensor(_LUMA).view(3, 1, 1)).sum(0, keepdim=True)
        return x, self.labels[i], transform_boxes(boxes, eval_geometry(self.transform, w, h))


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    xs, ys, boxes = zip(*items, strict=True)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), list(boxes)


def _eval_transform(img_size: int, crop_pct: float, interpolation: str):
    from timm.data import create_transform

    return create_transform(img_size, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _boxed_loader(dataset: BoxedImages, source: str, batch_size: int, workers: int,
                  classes: list[str] | None) -> LocalizationData:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate)
    return LocalizationData(loader, len(dataset), len(loader), source, classes)


def cub_localization(root: str | os.PathLike, *, img_size: int, in_chans: int = 3, crop_pct: float = 0.875,
                     interpolation: str = "bilinear", batch_size: int = 64, workers: int = 2,
                     limit: int | None = None) -> LocalizationData:
    """CUB-200-2011's test split (``train_test_split.txt`` 0) with its boxes (``bounding_boxes.txt``).

    Raises:
        FileNotFoundError, ValueError: The folder is not in CUB's layout (see ``mixkit.datasets.read_cub``).
    """
    from ..datasets import read_cub

    records = read_cub(root, boxes=True)
    keep = records.split(False)[:limit]
    if len(keep) == 0:
        raise ValueError(f"{records.root / 'train_test_split.txt'} marks no image as test (0)")
    ds = BoxedImages([records.paths[i] for i in keep], [int(records.labels[i]) for i in keep],
                     [torch.from_numpy(records.boxes[i : i + 1]) for i in keep],
                     _eval_transform(img_size, crop_pct, interpolation), in_chans=in_chans)
    return _boxed_loader(ds, f"CUB-200-2011 test split of {records.root} ({len(ds)} images)", batch_size, workers,
                         records.classes)


def imagenet_localization(data_dir: str | os.PathLike, boxes_dir: str | os.PathLike, *, img_size: int,
                          in_chans: int = 3, split: str | None = None, crop_pct: float = 0.875,
                          interpolation: str = "bilinear", batch_size: int = 64, workers: int = 2,
                          limit: int | None = None) -> LocalizationData:
    """An ImageFolder validation split with one PASCAL VOC XML file per image (``<image stem>.xml``, anywhere
    under ``boxes_dir``: ImageNet's validation boxes); an image's boxes are its objects named after its class
    folder (the synset).

    Raises:
        FileNotFoundError: Missing folders, or images without an XML file (the message counts and names them).
        ValueError: XML files without an object of their image's class, or malformed XML.
    """
    from ..data.imagefolder import scan_image_folder

    root = Path(data_dir).expanduser()
    folder = root if split is None and _is_class_folder_root(root) else find_val_split(root, split)
    boxes_root = Path(boxes_dir).expanduser()
    if not boxes_root.is_dir():
        raise FileNotFoundError(f"boxes directory {boxes_root} does not exist: pass --boxes-dir with ImageNet's "
                                "validation boxes (one PASCAL VOC .xml file per image)")
    index = scan_image_folder(folder, validate=False)
    samples = index.samples[:limit]
    xml = {p.stem: p for p in sorted(boxes_root.rglob("*.xml"))}
    missing = [Path(p).name for p, _ in samples if Path(p).stem not in xml]
    if missing:
        raise FileNotFoundError(f"{boxes_root} has no XML file for {len(missing)} of the {len(samples)} images of "
                                f"{folder} (e.g. {', '.join(missing[:3])}; {len(xml)} .xml files found): "
                                "--boxes-dir needs one <image stem>.xml per image")
    paths, labels, boxes, sizes, unmatched = [], [], [], [], []
    for path, label in samples:
        ann = read_voc_xml(xml[Path(path).stem])
        cls = index.classes[label]
        mine = ann.boxes_of(cls)
        if len(mine) == 0:
            unmatched.append(f"{ann.path.name} (objects {sorted(set(ann.names)) or 'none'}, class folder {cls!r})")
            continue
        paths.append(path)
        labels.append(label)
        boxes.append(mine)
        sizes.append((ann.width, ann.height))
    if unmatched:
        raise ValueError(f"{len(unmatched)} XML file(s) have no object named after their image's class folder: "
                         f"{'; '.join(unmatched[:3])}. The class folders must be the synsets the XML names use")
    ds = BoxedImages(paths, labels, boxes, _eval_transform(img_size, crop_pct, interpolation), in_chans=in_chans,
                     annotated_sizes=sizes)
    return _boxed_loader(ds, f"ImageFolder {folder} with boxes from {boxes_root} ({len(ds)} images)", batch_size,
                         workers, list(index.classes))


class _PlacedBatches:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, batch_size: int) -> None:
        self.images, self.labels, self.boxes, self.batch_size = images, labels, boxes, batch_size

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.labels), self.batch_size):
            j = slice(i, i + self.batch_size)
            yield self.images[j], self.labels[j], [b[None] for b in self.boxes[j]]


def placed_root(data_dir: str | os.PathLike | None, settings: dict) -> Path:
    """The Fashion-MNIST IDX folder of Placed Fashion-MNIST: ``data_dir`` (--data-dir), else the run's own when it
    trained on Fashion-MNIST or Placed Fashion-MNIST, else Debian's."""
    from ..datasets import DEFAULT_FASHION_MNIST_ROOT

    if data_dir:
        return Path(data_dir)
    if settings.get("dataset") in ("fashion_mnist", PLACED_DATASET) and settings.get("data_dir"):
        return Path(settings["data_dir"])
    return DEFAULT_FASHION_MNIST_ROOT


def _placed_pixels(img_size: int, in_chans: int, limit: int | None, root: Path | None, config=None):
    from ..datasets import DEFAULT_FASHION_MNIST_ROOT, PlacedFashionMNIST

    if in_chans not in (1, 3):
        raise ValueError(f"Placed Fashion-MNIST is greyscale: a model with in_chans={in_chans} cannot take it "
                         "(1 or 3)")
    ds = PlacedFashionMNIST(root=root or DEFAULT_FASHION_MNIST_ROOT, train=False, config=config, limit=limit)
    x = ds.images.unsqueeze(1).float() / 255
    boxes = ds.boxes.clone()
    canvas = x.shape[-1]
    if img_size != canvas:  # a plain resize: boxes scale with it (half-pixel centres)
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True,
                          align_corners=False).clamp_(0, 1)
        boxes *= img_size / canvas
    if in_chans == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return x, ds.labels, boxes, list(ds.classes)


def placed_localization(*, img_size: int, in_chans: int = 1, batch_size: int = 256, limit: int | None = None,
                        root: str | os.PathLike | None = None, config=None) -> LocalizationData:
    """Placed Fashion-MNIST's test split (``mixkit.datasets.PlacedFashionMNIST``; ``root``: the IDX folder,
    default Debian's) with its boxes."""
    x, y, boxes, classes = _placed_pixels(img_size, in_chans, limit, root and Path(root), config)
    batches = _PlacedBatches(x, y, boxes, batch_size)
    return LocalizationData(batches, len(y), len(batches), f"Placed Fashion-MNIST test split ({len(y)} images)",
                            classes)


def placed_test(*, img_size: int, in_chans: int = 1, batch_size: int = 256, limit: int | None = None,
                root: str | os.PathLike | None = None) -> EvalData:
    """Placed Fashion-MNIST's test split for the classification metrics."""
    x, y, _, _ = _placed_pixels(img_size, in_chans, limit, root and Path(root))
    batches = _TensorBatches(x, y, batch_size)
    return EvalData(batches, len(y), len(batches), f"Placed Fashion-MNIST test split ({len(y)} images)")


def cub_test(root: str | os.PathLike, *, img_size: int, in_chans: int = 3, crop_pct: float = 0.875,
             interpolation: str = "bilinear", batch_size: int = 64, workers: int = 2) -> EvalData:
    """CUB-200-2011's test split for the classification metrics (the 'torch' loader, timm's eval transform)."""
    from ..data import create_loader
    from ..datasets import cub_index, read_cub
    from .data import _Luma

    if in_chans not in (1, 3):
        raise ValueError(f"CUB images are read as RGB: in_chans must be 1 or 3, got {in_chans}")
    records = read_cub(root)
    loader = create_loader("torch", cub_index(records, train=False), batch_size=batch_size, is_training=False,
                           img_size=img_size, num_workers=workers, device="cpu", rank=0, world_size=1,
                           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=crop_pct, interpolation=interpolation)
    n = loader.shard_size
    return EvalData(loader if in_chans == 3 else _Luma(loader), n, len(loader),
                    f"CUB-200-2011 test split of {records.root} ({n} images)")
