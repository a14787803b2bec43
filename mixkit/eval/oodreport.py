"""``mixkit-eval --ood`` / ``--ood-dir``: the flags, the scoring passes, the histograms and eval.json's ``ood``.

The in-distribution set is the evaluated split itself (the images of the classification metrics, ``--limit``
included); every OOD set is scored by the same ``OODScorer`` and compared with it by ``ood_metrics``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attacks import NormalizedModel
from .data import EvalData
from .ood import (
    DEFAULT_ODIN_EPS,
    DEFAULT_ODIN_TEMPERATURE,
    DEFAULT_OOD_SCORES,
    OOD_METRICS,
    OOD_SCORES,
    OODScorer,
    fit_mahalanobis,
    ood_metrics,
    score_batches,
)
from .ood_data import DEFAULT_OOD_SAMPLES, OOD_SETS, OODSet, builtin_ood_set, folder_name, folder_ood_set
from .oodfigure import plot_ood_histograms

__all__ = ["add_ood_args", "format_ood_table", "ood_report", "ood_requested", "training_split"]


def add_ood_args(parser: argparse.ArgumentParser) -> None:
    """The ``mixkit-eval`` flags of out-of-distribution detection (one argument group)."""
    g = parser.add_argument_group("out-of-distribution detection (in-distribution: the evaluated split)")
    g.add_argument("--ood", nargs="+", action="extend", choices=OOD_SETS, metavar="SET",
                   help="built-in offline OOD sets: 'digits' (scikit-learn's handwritten digits, upscaled), "
                        "'noise' (half Gaussian, half uniform noise), 'gaussian', 'uniform', 'photos' and "
                        "'textures' (random crops of scikit-image's bundled photographs / brick, grass and "
                        "gravel); writes eval.json's 'ood' and an ood_<set>.png score histogram per set")
    g.add_argument("--ood-dir", action="append", type=Path, metavar="DIR",
                   help="a folder of OOD images (flat, or an ImageFolder whose classes are ignored), read with "
                        "the evaluation transform and the model's channels; repeat for several sets, named "
                        "after their folders")
    g.add_argument("--ood-scores", nargs="+", choices=OOD_SCORES, metavar="SCORE",
                   help=f"detectors: {', '.join(OOD_SCORES)} (default: {' '.join(DEFAULT_OOD_SCORES)}, one "
                        "forward pass per image; odin adds a backward and a second forward pass per image; "
                        "mahalanobis adds a forward pass over the whole training split for the class means)")
    g.add_argument("--ood-samples", type=int, metavar="N",
                   help=f"images per OOD set: a built-in set draws N (default {DEFAULT_OOD_SAMPLES}; digits has "
                        "1797 at most), an --ood-dir keeps its first N in path order (default: all)")
    g.add_argument("--odin-temperature", type=float,
                   help=f"ODIN's softmax temperature (default {DEFAULT_ODIN_TEMPERATURE:g}, Liang et al.)")
    g.add_argument("--odin-eps", type=float,
                   help=f"ODIN's input step in pixels of [0, 1] (default {DEFAULT_ODIN_EPS:g}, Liang et al.)")


def ood_requested(args: argparse.Namespace) -> bool:
    """Whether ``args`` ask for OOD detection, checked before anything runs.

    Raises:
        ValueError: OOD options without a set, ODIN options without the ODIN score, or a count below 1.
    """
    if not (args.ood or args.ood_dir):
        given = [flag for flag, value in (("--ood-scores", args.ood_scores), ("--ood-samples", args.ood_samples),
                                          ("--odin-temperature", args.odin_temperature),
                                          ("--odin-eps", args.odin_eps)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need an OOD set: add --ood SET or --ood-dir DIR")
        return False
    if args.ood_samples is not None and args.ood_samples < 1:
        raise ValueError(f"--ood-samples must be >= 1, got {args.ood_samples}")
    for flag, value in (("--odin-temperature", args.odin_temperature), ("--odin-eps", args.odin_eps)):
        if value is not None and "odin" not in (args.ood_scores or DEFAULT_OOD_SCORES):
            raise ValueError(f"{flag} is for the ODIN score: add odin to --ood-scores")
    return True


def _scorer(args: argparse.Namespace, model: NormalizedModel, mahalanobis: object | None) -> OODScorer:
    scores = tuple(dict.fromkeys(args.ood_scores or DEFAULT_OOD_SCORES))
    return OODScorer(model, scores, mahalanobis=mahalanobis,
                     odin_temperature=DEFAULT_ODIN_TEMPERATURE if args.odin_temperature is None
                     else args.odin_temperature,
                     odin_eps=DEFAULT_ODIN_EPS if args.odin_eps is None else args.odin_eps)


def _ood_sets(args: argparse.Namespace, settings: dict[str, Any], *, img_size: int, in_chans: int,
              in_memory_id: bool) -> list[OODSet]:
    sets = [builtin_ood_set(name, img_size=img_size, in_chans=in_chans, num_samples=args.ood_samples,
                            batch_size=args.batch_size) for name in dict.fromkeys(args.ood or ())]
    # Image files next to an in-memory ID set (Fashion-MNIST, Placed) are resized whole, as those sets are.
    crop_pct = args.crop_pct or (1.0 if in_memory_id else settings.get("crop_pct") or 0.875)
    for path in args.ood_dir or ():
        name = folder_name(path, taken=[s.name for s in sets])
        sets.append(folder_ood_set(path, name=name, img_size=img_size, in_chans=in_chans, crop_pct=crop_pct,
                                   interpolation=settings.get("interpolation") or "bilinear",
                                   batch_size=args.batch_size, workers=args.workers, limit=args.ood_samples))
    return sets


class _ResizedTensors:
    # (uint8 images (N, H, W), labels) -> batches of pixels at the model's size and channels, made per batch.
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, img_size: int, in_chans: int,
                 batch_size: int) -> None:
        self.images, self.labels, self.img_size, self.in_chans = images, labels, img_size, in_chans
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        from .ood_data import _resize, _to_chans

        for i in range(0, len(self.labels), self.batch_size):
            x = self.images[i:i + self.batch_size].unsqueeze(1).float() / 255
            yield _to_chans(_resize(x, self.img_size), self.in_chans), self.labels[i:i + self.batch_size]


def training_split(args: argparse.Namespace, settings: dict[str, Any], *, img_size: int, in_chans: int,
                   dataset: str) -> EvalData:
    """The labelled training split of the run (or of ``--data-dir``), read with the evaluation transform: the
    Mahalanobis score's class means and covariance are fitted on it.

    Raises:
        ValueError, FileNotFoundError: No training split can be found (the message names what was looked for).
    """
    from ..datasets import FashionMNIST, PlacedFashionMNIST
    from .data import FASHION_MNIST, image_folder_val, training_classes
    from .locdata import CUB, PLACED_DATASET, placed_root

    shared = dict(img_size=img_size, in_chans=in_chans, batch_size=args.batch_size)
    if dataset in (FASHION_MNIST, PLACED_DATASET):
        root = placed_root(args.data_dir, settings)
        ds = (FashionMNIST(root=root, train=True) if dataset == FASHION_MNIST
              else PlacedFashionMNIST(root=root, train=True))
        batches = _ResizedTensors(ds.images, ds.labels, **shared)
        name = "Fashion-MNIST" if dataset == FASHION_MNIST else "Placed Fashion-MNIST"
        return EvalData(batches, len(ds.labels), len(batches), f"{name} training split ({len(ds.labels)} images)")
    data_dir = args.data_dir or settings.get("data_dir")
    if not data_dir:
        raise ValueError("the Mahalanobis score needs the training split: pass --data-dir (an ImageFolder root "
                         "with train/), or drop mahalanobis from --ood-scores")
    crop = dict(crop_pct=args.crop_pct or settings.get("crop_pct") or 0.875,
                interpolation=settings.get("interpolation") or "bilinear")
    if dataset == CUB:
        from ..data import create_loader
        from ..datasets import cub_index, read_cub
        from .data import _Luma

        records = read_cub(data_dir)
        loader = create_loader("torch", cub_index(records, train=True), batch_size=args.batch_size,
                               is_training=False, img_size=img_size, num_workers=args.workers, device="cpu", rank=0,
                               world_size=1, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **crop)
        n = loader.shard_size
        return EvalData(loader if in_chans == 3 else _Luma(loader), n, len(loader),
                        f"CUB-200-2011 training split of {records.root} ({n} images)")
    split = settings.get("train_split") or "train"
    root = Path(data_dir).expanduser()
    if not ((root / split).is_dir() or (root / f"{split}.beton").is_file()):
        raise FileNotFoundError(f"the Mahalanobis score needs the training split, and {root} has no {split}/ or "
                                f"{split}.beton: pass --data-dir with the folder that holds it, or drop mahalanobis "
                                "from --ood-scores")
    return image_folder_val(root, split=split, workers=args.workers, validate=args.validate,
                            class_map=training_classes(settings) if args.run is not None else None, **shared, **crop)


def _figure_path(diagram: Path, name: str) -> Path:
    # Beside the reliability diagram and named after it: reliability.png -> ood_<set>.png,
    # reliability_<x>.png -> ood_<set>_<x>.png, other.png -> ood_<set>_other.png.
    stem = diagram.stem
    suffix = stem[len("reliability"):] if stem.startswith("reliability") else f"_{stem}"
    return diagram.with_name(f"ood_{name}{suffix}.png")


def ood_report(args: argparse.Namespace, model: nn.Module, settings: dict[str, Any], id_data: EvalData, *,
               img_size: int, in_chans: int, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
               diagram: Path, dataset: str) -> dict[str, Any]:
    """Scores the evaluated split and every OOD set, draws a histogram per set, and returns eval.json's
    ``ood`` (set -> score -> metrics, with the counts) and ``ood_settings``.

    Args:
        args: The parsed flags (``add_ood_args``'s and the data flags).
        model: The classifier (normalising outside: it is wrapped in ``NormalizedModel``).
        settings: The run's settings (args.yaml).
        id_data: The evaluated split (the in-distribution images).
        img_size: Input side length.
        in_chans: Input channels.
        mean: Normalisation mean.
        std: Normalisation std.
        device: Where the model runs.
        diagram: The reliability diagram's path (the histograms go beside it).
        dataset: The evaluated dataset's name ('' for an ImageFolder), for the Mahalanobis training split.
    """
    start = time.perf_counter()
    pixel_model = NormalizedModel(model, mean, std).to(device).eval()
    scores = tuple(dict.fromkeys(args.ood_scores or DEFAULT_OOD_SCORES))
    sets = _ood_sets(args, settings, img_size=img_size, in_chans=in_chans,
                     in_memory_id=dataset in ("fashion_mnist", "placed_fashion_mnist"))
    mahalanobis, fit = None, None
    if "mahalanobis" in scores:
        train = training_split(args, settings, img_size=img_size, in_chans=in_chans, dataset=dataset)
        num_classes = int(settings.get("num_classes") or model.num_classes)
        mahalanobis = fit_mahalanobis(pixel_model, train.batches, num_classes=num_classes, device=device)
        fit = {"data": train.source, "num_samples": train.num_samples}
    scorer = _scorer(args, pixel_model, mahalanobis)
    progress = not args.no_progress
    id_scores = score_batches(scorer, id_data.batches, device=device, progress=progress,
                              total=id_data.num_batches, desc="ood: in-distribution")
    num_id = len(id_scores[scores[0]])
    ood: dict[str, Any] = {}
    for s in sets:
        out_scores = score_batches(scorer, s.batches, device=device, progress=progress, total=s.num_batches,
                                   desc=f"ood: {s.name}")
        metrics = {name: ood_metrics(id_scores[name], out_scores[name]) for name in scores}
        figure = plot_ood_histograms(id_scores, out_scores, metrics, _figure_path(diagram, s.name),
                                     id_name=id_data.source, ood_name=f"{s.name}: {s.source}",
                                     title=settings.get("model", ""))
        ood[s.name] = {**metrics, "num_samples": len(out_scores[scores[0]]), "num_id_samples": num_id,
                       "data": s.source, "histogram": str(figure)}
    config = {"scores": list(scores), "metrics": list(OOD_METRICS), "id_data": id_data.source,
              "id_num_samples": num_id, "mahalanobis_fit": fit,
              "odin_temperature": scorer.odin_temperature if "odin" in scores else None,
              "odin_eps": scorer.odin_eps if "odin" in scores else None, "elapsed_s": time.perf_counter() - start}
    return {"ood": ood, "ood_settings": config}


def format_ood_table(ood: dict[str, Any]) -> str:
    """eval.json's ``ood`` as a compact text table: AUROC / FPR95 in percent per set and score."""
    if not ood:
        return ""
    scores = [k for k, v in next(iter(ood.values())).items() if isinstance(v, dict)]
    labels = {name: f"{name} ({entry['num_samples']})" for name, entry in ood.items()}
    width = max(len("OOD set (images)"), *map(len, labels.values())) + 2
    head = "OOD set (images)".ljust(width) + "".join(f"{s:<17}" for s in scores) + "AUROC / FPR95 (%)"
    rows = [labels[name].ljust(width) + "".join(f"{100 * e[s]['auroc']:6.2f} / {100 * e[s]['fpr95']:6.2f}  "
                                                for s in scores).rstrip() for name, e in ood.items()]
    return "\n".join([head, *rows])
