"""Writers from a validated ImageFolder to FFCV's .beton and to webdataset tar shards.

The .beton is written by FFCV's own DatasetWriter with an ``image`` RGBImageField and a ``label``
IntField; a ``<out>.json`` sidecar records the class names and the bad files skipped, so that a loader
can report them. The tar shards hold ``<key>.<ext>`` (the original image bytes), ``<key>.cls`` (the label
as ASCII, the webdataset convention) and ``<key>.label`` (the label as little-endian int64, which DALI's
webdataset reader turns into a tensor without parsing text), plus a DALI index ``<shard>.idx`` per shard
when DALI is installed.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .imagefolder import ImageFolderIndex, scan_image_folder

__all__ = ["ConvertResult", "read_sidecar", "sidecar_path", "write_beton", "write_webdataset"]

BETON_FIELDS = {"image": "RGBImageField", "label": "IntField"}
WRITE_MODES = ("raw", "jpg", "smart", "proportion")


@dataclass(frozen=True)
class ConvertResult:
    """What a writer produced.

    Attributes:
        paths: The files written (one .beton, or the tar shards).
        index: The validated ImageFolder that was written, ``index.skipped`` included.
    """

    paths: list[Path]
    index: ImageFolderIndex

    @property
    def num_samples(self) -> int:
        return len(self.index)


def sidecar_path(beton: str | os.PathLike) -> Path:
    """The JSON written next to a .beton."""
    return Path(str(beton) + ".json")


def read_sidecar(beton: str | os.PathLike) -> dict | None:
    """The sidecar's content, or None when the .beton has none (written by other tools)."""
    path = sidecar_path(beton)
    return json.loads(path.read_text()) if path.exists() else None


class _RGBSamples:
    # An indexable (image, label) dataset for DatasetWriter; picklable for its worker processes.
    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[i]
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB")), label


def write_beton(
        root: str | os.PathLike,
        out: str | os.PathLike,
        *,
        max_resolution: int | None = 512,
        jpeg_quality: int = 90,
        compress_probability: float = 0.5,
        write_mode: str = "proportion",
        num_workers: int = -1,
        chunk_size: int = 100,
        skip_corrupt: bool = False,
) -> ConvertResult:
    """Writes an ImageFolder to an FFCV .beton (defaults as in FFCV's ImageNet example).

    Args:
        root: ImageFolder root.
        out: The .beton file to write.
        max_resolution: Resize images so that their longer side is at most this; None keeps them.
        jpeg_quality: JPEG quality of the images stored compressed.
        compress_probability: With ``write_mode='proportion'``, the fraction of images stored as JPEG
            (the rest raw: larger file, faster decoding).
        write_mode: 'raw', 'jpg', 'smart' or 'proportion' (FFCV's RGBImageField modes).
        num_workers: Writer processes; -1 for all cores.
        chunk_size: Samples per writer task.
        skip_corrupt: Skip bad files (recorded in the sidecar) instead of raising.

    Raises:
        ImportError: ffcv is not installed.
        ValueError: Bad options or bad input files (see ``scan_image_folder``).
    """
    if write_mode not in WRITE_MODES:
        raise ValueError(f"write_mode {write_mode!r}: choose one of {WRITE_MODES}.")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}.")
    if not 0.0 <= compress_probability <= 1.0:
        raise ValueError(f"compress_probability must be in [0, 1], got {compress_probability}.")
    if max_resolution is not None and max_resolution < 1:
        raise ValueError(f"max_resolution must be positive or None, got {max_resolution}.")
    try:
        from ffcv.fields import IntField, RGBImageField
        from ffcv.writer import DatasetWriter
    except ImportError as e:
        raise ImportError("write_beton needs ffcv: pip install 'mixkit[ffcv]' (see `make install-system` "
                          "for its system packages).") from e
    out = Path(out)
    if out.suffix != ".beton":
        raise ValueError(f"output {str(out)!r} should end in .beton.")
    index = scan_image_folder(root, skip_corrupt=skip_corrupt)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter(str(out), {
        "image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                               jpeg_quality=jpeg_quality, compress_probability=compress_probability),
        "label": IntField(),
    }, num_workers=num_workers)
    writer.from_indexed_dataset(_RGBSamples(index.samples), chunksize=chunk_size)
    sidecar_path(out).write_text(json.dumps({
        "root": str(index.root), "classes": index.classes, "num_samples": len(index),
        "skipped": [list(s) for s in index.skipped], "fields": BETON_FIELDS,
    }, indent=1))
    return ConvertResult(paths=[out], index=index)


def dali_index_path(tar: str | os.PathLike) -> Path:
    """The DALI index file written next to a tar shard."""
    return Path(tar).with_suffix(".idx")


def _write_dali_index(tar: Path) -> None:
    # DALI's webdataset reader would otherwise scan every tar at start-up; its own wds2idx tool (shipped
    # in the nvidia-dali wheel) writes the index. Without DALI installed there is no reader to serve.
    try:
        from wds2idx import IndexCreator
    except ImportError:
        return
    with IndexCreator(str(tar), str(dali_index_path(tar)), verbose=False) as creator:
        creator.create_index()


def write_webdataset(
        root: str | os.PathLike,
        out_dir: str | os.PathLike,
        *,
        shard_size: int = 1000,
        prefix: str = "shard",
        shuffle_seed: int | None = 0,
        skip_corrupt: bool = False,
) -> ConvertResult:
    """Writes an ImageFolder to webdataset tar shards ``<out_dir>/<prefix>-000000.tar``, ...

    Written with the standard library's tarfile: the format is a plain tar and this avoids a dependency.

    Args:
        root: ImageFolder root.
        out_dir: Directory for the shards.
        shard_size: Samples per shard.
        prefix: Shard file name prefix.
        shuffle_seed: Write the samples in an order shuffled with this seed (None: ImageFolder order).
            Readers cut shards into contiguous blocks, so a class-sorted file would give each rank a few
            classes only.
        skip_corrupt: Skip bad files instead of raising.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    index = scan_image_folder(root, skip_corrupt=skip_corrupt)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = index.samples
    if shuffle_seed is not None:
        samples = [samples[i] for i in np.random.default_rng(shuffle_seed).permutation(len(samples))]
    paths = []
    for s, start in enumerate(range(0, len(samples), shard_size)):
        path = out_dir / f"{prefix}-{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i, (src, label) in enumerate(samples[start:start + shard_size], start):
                key = f"{i:09d}"
                ext = os.path.splitext(src)[1].lower().lstrip(".")
                for name, data in ((f"{key}.{ext}", Path(src).read_bytes()),
                                   (f"{key}.cls", str(label).encode()),
                                   (f"{key}.label", np.int64(label).astype("<i8").tobytes())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
        _write_dali_index(path)
    (out_dir / f"{prefix}.json").write_text(json.dumps({
        "root": str(index.root), "classes": index.classes, "num_samples": len(index),
        "skipped": [list(s) for s in index.skipped], "shards": [p.name for p in paths],
    }, indent=1))
    return ConvertResult(paths=paths, index=index)
