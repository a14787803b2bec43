"""An offline ImageFolder of real photographs, for the data tests and benchmarks/loaders.py (not shipped).

Built from the photos that ship inside scikit-image (``skimage.data``) and scikit-learn
(``load_sample_images``): one class per source photo, each file a random crop at a random scale, randomly
flipped and saved as JPEG at a random quality. Nothing is downloaded.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PHOTO_SOURCES", "build_photo_folder", "load_photos"]

# Source photos that ship inside the packages (no pooch download); grey ones are converted to RGB.
PHOTO_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "retina", "camera", "china", "flower")


def load_photos(names: tuple[str, ...] = PHOTO_SOURCES) -> dict[str, np.ndarray]:
    """The source photos as HxWx3 uint8 arrays.

    Raises:
        ImportError: scikit-image or scikit-learn is missing (both are in mixkit's 'dev' extra).
        ValueError: An unknown photo name.
    """
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise ImportError("the photo ImageFolder needs scikit-image and scikit-learn: "
                          "pip install -e '.[dev]'.") from e
    sklearn_photos = None
    photos = {}
    for name in names:
        if name in ("china", "flower"):
            if sklearn_photos is None:
                bunch = load_sample_images()
                sklearn_photos = {Path(f).stem: img for f, img in zip(bunch.filenames, bunch.images,
                                                                       strict=True)}
            img = sklearn_photos[name]
        elif hasattr(skimage.data, name):
            img = getattr(skimage.data, name)()
        else:
            raise ValueError(f"unknown photo {name!r}: choose from {PHOTO_SOURCES}.")
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        photos[name] = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    return photos


def build_photo_folder(
        root: str | os.PathLike,
        *,
        num_files: int = 1000,
        min_size: int = 350,
        max_size: int = 640,
        quality: tuple[int, int] = (75, 95),
        classes: tuple[str, ...] = PHOTO_SOURCES,
        seed: int = 0,
) -> Path:
    """Writes ``num_files`` JPEGs to ``root/<photo>/<i>.jpg`` (classes in turn), unless already there.

    A ``root/.complete`` stamp records the settings; a folder built with other settings is rebuilt.

    Args:
        root: Output ImageFolder root.
        num_files: Number of files in all.
        min_size: Smallest crop side in pixels.
        max_size: Largest crop side in pixels.
        quality: Inclusive range of JPEG qualities.
        classes: Source photos, one class each.
        seed: Seed of the crops, scales, flips and qualities.

    Returns:
        The root.
    """
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}.")
    root = Path(root)
    done = root / ".complete"
    stamp = f"{num_files} {min_size} {max_size} {quality} {classes} {seed}"
    if done.exists() and done.read_text() == stamp:
        return root
    photos = load_photos(classes)
    rng = np.random.default_rng(seed)
    for c in classes:
        if (root / c).exists():  # built with other settings: start afresh, so no stale file remains
            shutil.rmtree(root / c)
        (root / c).mkdir(parents=True)
    for i in range(num_files):
        name = classes[i % len(classes)]
        src = photos[name]
        h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        # Crop a window of the source at a random scale (upsampling small sources), then resize to h x w.
        zoom = max(h / src.shape[0], w / src.shape[1], 1.0) * rng.uniform(1.0, 1.6)
        ch, cw = max(1, min(src.shape[0], round(h / zoom))), max(1, min(src.shape[1], round(w / zoom)))
        y = int(rng.integers(0, src.shape[0] - ch + 1))
        x = int(rng.integers(0, src.shape[1] - cw + 1))
        img = Image.fromarray(src[y:y + ch, x:x + cw]).resize((w, h), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(root / name / f"{i:06d}.jpg", quality=int(rng.integers(quality[0], quality[1] + 1)))
    done.write_text(stamp)
    return root
