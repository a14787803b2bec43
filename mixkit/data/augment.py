"""timm's extra training augmentation (``--aa``, ``--color-jitter``, ``--reprob``, ...) as one loader option.

``LoaderConfig.augment`` holds the keywords of ``timm.data.create_transform`` beyond the crop and flip
every backend applies; the 'torch' backend hands them to timm's factory as they are. Backends whose
pipelines are not timm's transforms (ffcv's and DALI's compiled ops, the 'memory' tensors) cannot apply
them and refuse them (``check_augment_supported``), naming the backend that can.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["AUGMENT_KEYS", "as_augment", "check_aug_splits_supported", "check_augment_supported"]

# timm.data.create_transform's keywords for the training augmentation beyond RandomResizedCrop + flip.
AUGMENT_KEYS = ("auto_augment", "color_jitter", "color_jitter_prob", "grayscale_prob", "gaussian_blur_prob",
                "re_prob", "re_mode", "re_count")


def as_augment(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keywords that change timm's training transform (None and off values dropped), checked by name.

    Raises:
        ValueError: A key that is not one of ``AUGMENT_KEYS``.
    """
    augment = dict(augment or {})
    unknown = sorted(set(augment) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"augment has keys timm's create_transform does not take here: {unknown}; "
                         f"use {', '.join(AUGMENT_KEYS)}.")
    off = {"auto_augment": (None, ""), "color_jitter": (None, 0, 0.0), "color_jitter_prob": (None,),
           "grayscale_prob": (None, 0, 0.0), "gaussian_blur_prob": (None, 0, 0.0), "re_prob": (None, 0, 0.0)}
    kept = {k: v for k, v in augment.items() if k not in off or v not in off[k]}
    if "re_prob" not in kept:  # erasing's mode and count mean nothing without erasing
        kept.pop("re_mode", None)
        kept.pop("re_count", None)
    if "color_jitter" not in kept:
        kept.pop("color_jitter_prob", None)
    return kept


def check_augment_supported(backend: str, augment: Mapping[str, Any]) -> None:
    """Refuses timm augmentation a backend cannot apply (never ignored silently).

    Raises:
        ValueError: ``augment`` is not empty; the message names the flags and the 'torch' backend.
    """
    if augment:
        flags = {"auto_augment": "--aa", "color_jitter": "--color-jitter", "color_jitter_prob": "--color-jitter-prob",
                 "grayscale_prob": "--grayscale-prob", "gaussian_blur_prob": "--gaussian-blur-prob",
                 "re_prob": "--reprob", "re_mode": "--remode", "re_count": "--recount"}
        named = ", ".join(f"{flags[k]} ({k})" for k in augment)
        raise ValueError(f"the {backend!r} loader cannot apply timm's augmentation {named}: its pipeline is not "
                         "timm's transforms. Use --loader torch on an ImageFolder (timm's create_transform "
                         "applies them), or drop these flags.")


def check_aug_splits_supported(backend: str, aug_splits: int) -> None:
    """Refuses timm's augmentation splits in a backend whose pipeline is not timm's transforms.

    Raises:
        ValueError: ``aug_splits`` is set; the message names the 'torch' backend.
    """
    if aug_splits:
        raise ValueError(f"the {backend!r} loader cannot make timm's augmentation splits (--aug-splits "
                         f"{aug_splits}, aug_splits): they come from timm's AugMixDataset over its transforms. Use "
                         "--loader torch on an ImageFolder, or drop --aug-splits.")
