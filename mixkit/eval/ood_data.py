"""Out-of-distribution image sets for ``mixkit-eval --ood`` / ``--ood-dir``: pixels in [0, 1] at the run's size
and channels, nothing downloaded.

Built-in sets (``OOD_SETS``), the same images for every run of a given size and channels (fixed seed):

- ``digits``: scikit-learn's ``load_digits`` (1,797 handwritten digits of 8 x 8 pixels, ink 0..16, shipped
  inside the package), scaled to [0, 1] and upscaled to the run's size (bilinear, antialiased): white strokes
  on black, the MNIST-like set next to Fashion-MNIST.
- ``gaussian``: i.i.d. pixels ``N(0.5, 1)`` clipped to [0, 1]; ``uniform``: i.i.d. ``U[0, 1]`` pixels (the
  noise sets of Hendrycks & Gimpel, ICLR 2017); ``noise``: the first half Gaussian, the second uniform.
- ``photos``: random square crops (a quarter to three quarters of the shorter side) of the ten photographs
  that ship inside scikit-image's wheel (``skimage.data``: astronaut, camera, cat, coffee, coins, Hubble
  deep field, moon, motorcycle, retina, rocket); ``textures``: crops of its brick, grass and gravel images.
  The files are read from ``skimage.data.data_dir``; a build without them is an error, never a download.

scikit-learn's faces (Olivetti, LFW) are not offered: ``fetch_*`` downloads them on first use.

An ``--ood-dir`` is any folder of images, flat or an ImageFolder (class folders are ignored: every image under
it, sorted by path), read as the evaluated ImageFolder split is read: ``load_rgb`` and timm's evaluation
transform (resize to ``img_size / crop_pct``, centre crop, mean 0 and std 1), then ITU-R 601 luma for a
greyscale model, so a grey run sees grey OOD images and an RGB run sees greyscale files as RGB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .data import _LUMA

__all__ = ["DEFAULT_OOD_SAMPLES", "OOD_SEED", "OOD_SETS", "OODSet", "builtin_ood_set", "folder_name",
           "folder_ood_set"]

OOD_SETS = ("digits", "noise", "gaussian", "uniform", "photos", "textures")
"""Names of the built-in sets (``--ood``)."""
DEFAULT_OOD_SAMPLES = 1000
"""Images of a built-in set unless told (digits has 1,797 at most)."""
OOD_SEED = 0
"""Seed of the noise images and of the crops: fixed, so that every run is scored on the same images."""

_PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "hubble_deep_field.jpg",
           "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
_TEXTURES = ("brick.png", "grass.png", "gravel.png")


@dataclass
class OODSet:
    """Batches of out-of-distribution pixels (B, C, H, W) in [0, 1], and what they are.

    Attributes:
        name: Key in eval.json's ``ood``.
        batches: Re-iterable batches of images (no labels).
        num_samples: Images in one pass.
        num_batches: Batches in one pass (for the progress bar).
        source: Human-readable description.
    """

    name: str
    batches: Iterable[torch.Tensor]
    num_samples: int
    num_batches: int
    source: str


class _Chunks:
    def __init__(self, images: torch.Tensor, batch_size: int) -> None:
        self.images, self.batch_size = images, batch_size

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.images), self.batch_size):
            yield self.images[i:i + self.batch_size]


def _check_chans(in_chans: int) -> None:
    if in_chans not in (1, 3):
        raise ValueError(f"OOD images are made grey (1 channel) or RGB (3): a model with in_chans={in_chans} "
                         "cannot take them")


def _to_chans(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    # (N, 1 or 3, H, W) -> the model's channels: grey is repeated, RGB goes to ITU-R 601 luma (PIL's 'L').
    if x.shape[1] == in_chans:
        return x
    if in_chans == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    return (x * torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _resize(x: torch.Tensor, img_size: int) -> torch.Tensor:
    if x.shape[-1] == img_size and x.shape[-2] == img_size:
        return x
    return F.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True,
                         align_corners=False).clamp_(0, 1)


def _digits(n: int) -> tuple[torch.Tensor, str]:
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images[:n]).float().unsqueeze(1) / 16
    return images, f"scikit-learn's handwritten digits ({len(images)} of 8 x 8 px, upscaled)"


def _noise(kind: str, n: int, in_chans: int, img_size: int, g: torch.Generator) -> torch.Tensor:
    shape = (n, in_chans, img_size, img_size)
    if kind == "gaussian":
        return (torch.randn(shape, generator=g) + 0.5).clamp_(0, 1)
    return torch.rand(shape, generator=g)


def _skimage_files(names: tuple[str, ...]) -> list[Path]:
    try:
        import skimage.data
    except ImportError as e:
        raise ValueError("the 'photos' and 'textures' OOD sets read scikit-image's bundled images: "
                         "pip install 'mixkit[ood]' (or scikit-image)") from e
    root = Path(skimage.data.data_dir)
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise ValueError(f"this scikit-image build has no {', '.join(missing)} in {root} (it would download them): "
                         "mixkit never downloads OOD sets; use another --ood set or --ood-dir")
    return [root / n for n in names]


def _crops(files: list[Path], n: int, img_size: int, g: torch.Generator) -> torch.Tensor:
    from ..data.imagefolder import load_rgb

    photos = [torch.from_numpy(np.array(load_rgb(f))).permute(2, 0, 1).float() / 255 for f in files]
    out = torch.empty(n, 3, img_size, img_size)
    for i in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=g))]
        h, w = img.shape[-2:]
        short = min(h, w)
        side = int(short * (0.25 + 0.5 * float(torch.rand((), generator=g))))
        top = int(torch.randint(h - side + 1, (1,), generator=g))
        left = int(torch.randint(w - side + 1, (1,), generator=g))
        out[i] = _resize(img[None, :, top:top + side, left:left + side], img_size)[0]
    return out


def builtin_ood_set(name: str, *, img_size: int, in_chans: int, num_samples: int | None = None,
                    batch_size: int = 256) -> OODSet:
    """One of ``OOD_SETS`` at the run's size and channels (see the module docstring).

    Args:
        name: Set name.
        img_size: Side length of the model's input.
        in_chans: 1 or 3.
        num_samples: Images (default ``DEFAULT_OOD_SAMPLES``; digits has 1,797 at most).
        batch_size: Images per batch.

    Raises:
        ValueError: An unknown name, a count below 1, other channels, or scikit-image missing its images.
    """
    if name not in OOD_SETS:
        raise ValueError(f"unknown OOD set {name!r}: choose from {', '.join(OOD_SETS)}, or pass a folder of images "
                         "with --ood-dir")
    n = DEFAULT_OOD_SAMPLES if num_samples is None else num_samples
    if n < 1:
        raise ValueError(f"an OOD set needs at least 1 image, got {n} (--ood-samples)")
    _check_chans(in_chans)
    g = torch.Generator().manual_seed(OOD_SEED)
    if name == "digits":
        x, source = _digits(n)
        x = _resize(x, img_size)
    elif name in ("gaussian", "uniform"):
        x = _noise(name, n, in_chans, img_size, g)
        source = (f"{n} images of i.i.d. N(0.5, 1) pixels clipped to [0, 1]" if name == "gaussian"
                  else f"{n} images of i.i.d. U[0, 1] pixels")
    elif name == "noise":
        x = torch.cat([_noise("gaussian", n - n // 2, in_chans, img_size, g),
                       _noise("uniform", n // 2, in_chans, img_size, g)])
        source = f"{n - n // 2} Gaussian and {n // 2} uniform noise images"
    else:
        files = _skimage_files(_PHOTOS if name == "photos" else _TEXTURES)
        x = _crops(files, n, img_size, g)
        source = f"{n} random crops of scikit-image's {', '.join(f.stem for f in files)}"
    x = _to_chans(x, in_chans)
    batches = _Chunks(x, batch_size)
    return OODSet(name, batches, len(x), len(batches), source)


class _ImageFiles(Dataset):
    def __init__(self, paths: list[Path], transform, in_chans: int) -> None:
        self.paths, self.transform, self.in_chans = paths, transform, in_chans

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from ..data.imagefolder import load_rgb

        try:
            x = self.transform(load_rgb(self.paths[i]))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read OOD image {self.paths[i]}: {e}") from e
        return _to_chans(x[None], self.in_chans)[0]


def _image_files(root: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(files)


def folder_name(path: str | os.PathLike, taken: Iterable[str] = ()) -> str:
    """The eval.json key of an ``--ood-dir``: its folder name (characters other than letters, digits, ``._-``
    replaced by ``_``), with ``_2``, ``_3``, ... after a name already ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).expanduser().resolve().name) or "ood_dir"
    taken = set(taken)
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def folder_ood_set(path: str | os.PathLike, *, name: str, img_size: int, in_chans: int, crop_pct: float = 0.875,
                   interpolation: str = "bilinear", batch_size: int = 256, workers: int = 2,
                   limit: int | None = None) -> OODSet:
    """Every image under a folder (flat or ImageFolder), read with the evaluation transform (module docstring).

    Args:
        path: The folder.
        name: Key in eval.json (``folder_name``).
        img_size: Side length of the centre crop.
        in_chans: 1 (luma) or 3.
        crop_pct: Centre-crop fraction of the evaluation transform.
        interpolation: Resize interpolation (timm name).
        batch_size: Images per batch.
        workers: Loader processes.
        limit: Only the first this many images, in path order (None: all).

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: It holds no image file, or a file that is not a readable image.
    """
    from ..data.imagefolder import validate_image
    from .locdata import _eval_transform

    _check_chans(in_chans)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--ood-dir {root} is not a directory: pass a folder of images (flat, or class "
                                "folders as an ImageFolder)")
    files = _image_files(root)
    if not files:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        what = "is empty" if not any(root.iterdir()) else "holds no image file"
        raise ValueError(f"--ood-dir {root} {what} (looked for {', '.join(IMG_EXTENSIONS)} in it and its "
                         "subfolders)")
    files = files[:limit]
    bad = [(f, r) for f in files if (r := validate_image(f, full=False)) is not None]
    if bad:
        listed = "; ".join(f"{f}: {r}" for f, r in bad[:3])
        raise ValueError(f"--ood-dir {root}: {len(bad)} of {len(files)} image files cannot be read ({listed})")
    ds = _ImageFiles(files, _eval_transform(img_size, crop_pct, interpolation), in_chans)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    return OODSet(name, loader, len(ds), len(loader), f"{len(ds)} images under {root}")
