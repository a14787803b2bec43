"""Writers from a validated ImageFolder to FFCV's .beton and to webdataset tar shards.

The .beton is written by FFCV's own DatasetWriter with an ``image`` RGBImageField and a ``label``
IntField; a ``<out>.json`` sidecar records the class names and the bad files skipped, so that a loader
can report them, and the .beton's size and index checksum (``mixkit.data.beton``). The tar shards hold
``<key>.<ext>`` (the original image bytes), ``<key>.cls`` (the label as ASCII, the webdataset convention)
and ``<key>.label`` (the label as little-endian int64, which DALI's webdataset reader turns into a tensor
without parsing text), plus a DALI index ``<shard>.idx`` per shard when DALI is installed, and a
``<prefix>.json`` index listing the shards.

Nothing is lost or left half-written: every option is checked and the ImageFolder validated before the
output is touched; the output is written under a temporary name and moved into place complete (the
.beton is verified first), so an interrupted or failed conversion leaves the previous output as it was.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from ..atomic import replace_dir, temp_dir_beside, temp_file_beside
from ..parent_death import children_exit_with_parent
from .beton import BETON_FIELDS, check_beton, ffcv_size_problem, read_sidecar, sidecar_path
from .imagefolder import ImageFolderIndex, load_rgb, scan_image_folder

__all__ = ["BetonOptions", "ConvertResult", "read_sidecar", "sidecar_path", "write_beton",
           "write_webdataset"]

WRITE_MODES = ("raw", "jpg", "smart", "proportion")
# Files a webdataset conversion writes: an output directory holding anything else is not replaced.
_WDS_SUFFIXES = (".tar", ".idx", ".json")


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


class _RGBSamples:
    # An indexable (image, label) dataset for DatasetWriter; picklable for its worker processes.
    def __init__(self, samples: list[tuple[str, int]], errors: Path) -> None:
        self.samples = samples
        self.errors = errors

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[i]
        try:
            return np.asarray(load_rgb(path)), label
        except Exception as e:  # any failure: the file changed since validation
            # A worker that raises hangs FFCV's writer (it waits for every sample): record the failure,
            # write a placeholder, and refuse the whole file once the writer is done.
            with open(self.errors, "a") as f:
                f.write(f"  {path}: {type(e).__name__}: {e}\n")
            return np.zeros((2, 2, 3), np.uint8), label


@dataclass(frozen=True, kw_only=True)
class BetonOptions:
    """How ``write_beton`` stores images (defaults as in FFCV's ImageNet example), validated on construction.

    Args:
        max_resolution: Resize images so that their longer side is at most this; None keeps them.
        jpeg_quality: JPEG quality of the images stored compressed.
        compress_probability: With ``write_mode='proportion'``, the fraction of images stored as JPEG
            (the rest raw: larger file, faster decoding).
        write_mode: 'raw', 'jpg', 'smart' or 'proportion' (FFCV's RGBImageField modes).
        num_workers: Writer processes; -1 for all cores.
        chunk_size: Samples per writer task.

    Raises:
        ValueError: An option out of range, naming it.
    """

    max_resolution: int | None = 512
    jpeg_quality: int = 90
    compress_probability: float = 0.5
    write_mode: str = "proportion"
    num_workers: int = -1
    chunk_size: int = 100

    def __post_init__(self) -> None:
        if self.write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode {self.write_mode!r}: choose one of {WRITE_MODES}.")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}.")
        if not 0.0 <= self.compress_probability <= 1.0:
            raise ValueError(f"compress_probability must be in [0, 1], got {self.compress_probability}.")
        if self.max_resolution is not None and self.max_resolution < 1:
            raise ValueError(f"max_resolution must be positive or None, got {self.max_resolution}.")
        if self.num_workers != -1 and self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, or -1 for all cores, got {self.num_workers}.")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size (samples per writer task) must be >= 1, got {self.chunk_size}.")


def _check_output_file(out: Path, suffix: str) -> None:
    if out.suffix != suffix:
        raise ValueError(f"output {str(out)!r} should end in {suffix}.")
    if out.is_dir():
        raise ValueError(f"output {str(out)!r} is a directory: name a {suffix} file.")


def write_beton(
        root: str | os.PathLike,
        out: str | os.PathLike,
        options: BetonOptions | None = None,
        *,
        skip_corrupt: bool = False,
        **kwargs,
) -> ConvertResult:
    """Writes an ImageFolder to an FFCV .beton.

    An existing ``out`` (and its sidecar) is replaced only by a complete, verified new file.

    Args:
        root: ImageFolder root.
        out: The .beton file to write.
        options: How images are stored (``BetonOptions``); None: its defaults.
        skip_corrupt: Skip bad files (recorded in the sidecar) instead of raising; images too small for
            FFCV's decoders count as bad files.
        **kwargs: ``BetonOptions`` fields (max_resolution, jpeg_quality, compress_probability, write_mode,
            num_workers, chunk_size), overriding ``options``.

    Raises:
        ImportError: ffcv is not installed.
        ValueError: Bad options or bad input files (see ``scan_image_folder``).
    """
    o = BetonOptions(**kwargs) if options is None else replace(options, **kwargs)
    try:
        from ffcv.fields import IntField, RGBImageField
        from ffcv.writer import DatasetWriter
    except ImportError as e:
        from .factory import FFCV_INSTALL

        raise ImportError(f"write_beton needs ffcv: {FFCV_INSTALL}") from e
    out = Path(out)
    _check_output_file(out, ".beton")
    index = scan_image_folder(root, skip_corrupt=skip_corrupt,
                              check_size=partial(ffcv_size_problem, max_resolution=o.max_resolution))
    out.parent.mkdir(parents=True, exist_ok=True)
    with temp_file_beside(out) as tmp, temp_file_beside(sidecar_path(out)) as tmp_sidecar, \
            temp_file_beside(out.with_suffix(".errors")) as errors:
        writer = DatasetWriter(str(tmp), {
            "image": RGBImageField(write_mode=o.write_mode, max_resolution=o.max_resolution,
                                   jpeg_quality=o.jpeg_quality, compress_probability=o.compress_probability),
            "label": IntField(),
        }, num_workers=o.num_workers)
        with children_exit_with_parent():  # ffcv's forked workers would outlive a killed convert, waiting forever
            writer.from_indexed_dataset(_RGBSamples(index.samples, errors), chunksize=o.chunk_size)
        failed = errors.read_text()
        if failed:
            raise ValueError(f"files failed to read while writing (changed since validation?):\n{failed}"
                             f"{str(out)!r} is left as it was; convert again.")
        info = check_beton(tmp)
        if info.num_samples != len(index):
            raise RuntimeError(f"ffcv wrote {info.num_samples} samples of {len(index)}; {str(out)!r} is "
                               "left as it was.")
        tmp_sidecar.write_text(json.dumps({
            "root": str(index.root), "classes": index.classes, "num_samples": len(index),
            "skipped": [list(s) for s in index.skipped], "fields": BETON_FIELDS, "beton": info.fingerprint,
        }, indent=1))
        # The .beton first: between the two renames the old sidecar sits beside the new file, and its
        # fingerprint tells the loader so (read_sidecar).
        os.replace(tmp, out)
        os.replace(tmp_sidecar, sidecar_path(out))
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
        overwrite: bool = False,
) -> ConvertResult:
    """Writes an ImageFolder to webdataset tar shards ``<out_dir>/<prefix>-000000.tar``, ... and an index
    ``<out_dir>/<prefix>.json`` listing them (the 'dali' loader reads exactly the shards it lists).

    An output directory holds exactly one conversion: the shards are written into a temporary directory
    beside ``out_dir``, which then replaces ``out_dir`` as a whole. Written with the standard library's
    tarfile: the format is a plain tar and this avoids a dependency.

    Args:
        root: ImageFolder root.
        out_dir: Directory for the shards; it must be empty or missing unless ``overwrite``.
        shard_size: Samples per shard.
        prefix: Shard file name prefix.
        shuffle_seed: Write the samples in an order shuffled with this seed (None: ImageFolder order).
            Readers cut shards into contiguous blocks, so a class-sorted file would give each rank a few
            classes only.
        skip_corrupt: Skip bad files instead of raising.
        overwrite: Replace a non-empty ``out_dir`` written by an earlier conversion (only .tar, .idx and
            .json files; anything else is refused, never deleted).

    Raises:
        ValueError: Bad options, bad input files, or a non-empty ``out_dir`` without ``overwrite``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    if not prefix or os.sep in prefix or prefix.startswith("."):
        raise ValueError(f"prefix must be a plain, non-hidden file name prefix, got {prefix!r}.")
    out_dir = Path(out_dir)
    _check_output_dir(out_dir, overwrite)
    index = scan_image_folder(root, skip_corrupt=skip_corrupt)
    samples = index.samples
    if shuffle_seed is not None:
        samples = [samples[i] for i in np.random.default_rng(shuffle_seed).permutation(len(samples))]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with temp_dir_beside(out_dir) as tmp:
        names = []
        for s, start in enumerate(range(0, len(samples), shard_size)):
            names.append(f"{prefix}-{s:06d}.tar")
            _write_shard(tmp / names[-1], samples[start:start + shard_size], start)
        (tmp / f"{prefix}.json").write_text(json.dumps({
            "root": str(index.root), "classes": index.classes, "num_samples": len(index),
            "skipped": [list(s) for s in index.skipped], "shards": names,
        }, indent=1))
        _check_output_dir(out_dir, overwrite)  # again: another process may have written there meanwhile
        replace_dir(tmp, out_dir)
    return ConvertResult(paths=[out_dir / n for n in names], index=index)


def _check_output_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output {str(out_dir)!r} is a file: --format wds writes a directory.")
    entries = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        return
    if not overwrite:
        raise ValueError(f"output directory {str(out_dir)!r} is not empty ({len(entries)} entries): an "
                         "output directory holds exactly one conversion; pass --overwrite (overwrite=True) "
                         "to replace it as a whole, or choose an empty directory.")
    foreign = [p.name for p in entries if p.is_dir() or p.suffix not in _WDS_SUFFIXES]
    if foreign:
        raise ValueError(f"output directory {str(out_dir)!r} holds {foreign[:5]}, which a webdataset "
                         "conversion does not write: refusing to replace it; choose another directory.")


def _write_shard(path: Path, samples: list[tuple[str, int]], first_key: int) -> None:
    with tarfile.open(path, "w") as tar:
        for i, (src, label) in enumerate(samples, first_key):
            key = f"{i:09d}"
            ext = os.path.splitext(src)[1].lower().lstrip(".")
            for name, data in ((f"{key}.{ext}", Path(src).read_bytes()),
                               (f"{key}.cls", str(label).encode()),
                               (f"{key}.label", np.int64(label).astype("<i8").tobytes())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    _write_dali_index(path)
