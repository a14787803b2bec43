"""``mixkit-eval --localization``: the data, the CAM pass, the picture and the ``localization`` entry of eval.json."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .localization import DEFAULT_CAM_INTERVAL, localize
from .locdata import (
    CUB,
    DEFAULT_HOLDOUT,
    IMAGENET,
    LOCALIZATION_SETS,
    PLACED,
    PLACED_DATASET,
    LocalizationData,
    cub_localization,
    imagenet_localization,
    placed_localization,
    placed_root,
)
from .locfigure import plot_localization

__all__ = ["add_localization_args", "classification_dataset", "localization_report"]


def add_localization_args(parser: argparse.ArgumentParser) -> None:
    """The ``mixkit-eval`` flags of weakly supervised localization (one argument group)."""
    g = parser.add_argument_group("weakly supervised localization (CAM, Choe et al. 2020)")
    g.add_argument("--localization", choices=LOCALIZATION_SETS,
                   help="also measure CAM localization: 'cub' (CUB-200-2011's test split and bounding_boxes.txt "
                        "under --data-dir), 'imagenet' (the validation ImageFolder of --data-dir with the VOC XML "
                        "boxes of --boxes-dir) or 'placed' (Placed Fashion-MNIST's test split, offline); "
                        "writes eval.json's 'localization' and localization.png")
    g.add_argument("--boxes-dir", type=Path,
                   help="folder of PASCAL VOC XML files, one <image stem>.xml per validation image, for "
                        "--localization imagenet (ImageNet's validation boxes)")
    g.add_argument("--cam-interval", type=float, default=DEFAULT_CAM_INTERVAL,
                   help=f"step of the CAM threshold sweep 0, step, ..., below 1 (default {DEFAULT_CAM_INTERVAL}; "
                        "wsolevaluation uses 0.001)")
    g.add_argument("--loc-holdout", type=int,
                   help="held-out images per class (the first ones of each class) that choose the CAM threshold "
                        "and are not scored (default: 5 for cub, 10 for imagenet and placed; 0: the threshold is "
                        "chosen on the test images, an optimistic number)")
    g.add_argument("--loc-figure", type=Path,
                   help="PNG of 8 test images with their CAM, predicted and true boxes (default: "
                        "localization.png beside the JSON, named after it)")


def classification_dataset(localization: str | None) -> str | None:
    """The dataset of the classification metrics implied by ``--localization`` (None: the run's own)."""
    return {CUB: CUB, PLACED: PLACED_DATASET}.get(localization or "")


def _data(args: argparse.Namespace, settings: dict[str, Any], img_size: int, in_chans: int) -> LocalizationData:
    common = dict(img_size=img_size, in_chans=in_chans)
    files = dict(crop_pct=args.crop_pct or settings.get("crop_pct") or 0.875,
                 interpolation=settings.get("interpolation") or "bilinear", batch_size=args.batch_size,
                 workers=args.workers, limit=args.limit)
    data_dir = args.data_dir or settings.get("data_dir")
    if args.localization == PLACED:
        return placed_localization(batch_size=args.batch_size, limit=args.limit,
                                   root=placed_root(args.data_dir, settings), **common)
    if not data_dir:
        raise ValueError(f"--localization {args.localization} needs --data-dir ("
                         + ("the CUB_200_2011 folder)" if args.localization == CUB else
                            "the ImageNet root with its val/ ImageFolder)"))
    if args.localization == CUB:
        return cub_localization(data_dir, **common, **files)
    if args.boxes_dir is None:
        raise ValueError("--localization imagenet needs --boxes-dir (the folder of ImageNet's validation boxes, "
                         "one PASCAL VOC .xml file per image)")
    split = args.split or (settings.get("val_split") if settings.get("dataset") in ("", None) else None)
    return imagenet_localization(data_dir, args.boxes_dir, split=split, **common, **files)


def localization_report(args: argparse.Namespace, model: nn.Module, settings: dict[str, Any], *, img_size: int,
                        in_chans: int, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                        output: Path) -> dict[str, Any]:
    """Runs the localization pass as ``args`` say, draws the picture, and returns eval.json's entry."""
    if args.boxes_dir is not None and args.localization != IMAGENET:
        raise ValueError("--boxes-dir is for --localization imagenet")
    holdout = DEFAULT_HOLDOUT[args.localization] if args.loc_holdout is None else args.loc_holdout
    data = _data(args, settings, img_size, in_chans)
    start = time.perf_counter()
    result = localize(model, data.batches, mean=mean, std=std, holdout_per_class=holdout,
                      interval=args.cam_interval, device=device, progress=not args.no_progress,
                      total=data.num_batches)
    elapsed = time.perf_counter() - start
    figure = args.loc_figure or output.with_name(
        "localization.png" if output.name == "eval.json" else f"localization_{output.stem}.png")
    m = result.metrics
    chosen = m["cam_thresholds"].index(m["chosen_threshold"])
    plot_localization(result.samples, chosen, m["cam_thresholds"], figure, classes=data.classes,
                      title=f"{settings['model']} on {data.source}")
    return {"dataset": args.localization, "data": data.source, "holdout_per_class": holdout,
            **result.to_dict(), "figure": str(figure), "elapsed_s": elapsed}
