"""The 'dali' backend: an NVIDIA DALI pipeline on an ImageFolder or on webdataset tar shards.

With CUDA the JPEGs are decoded by the 'mixed' (GPU) decoder and resized/normalised on the GPU; without
it the same graph runs on CPU operators (``device_id=None``). This module imports DALI;
``create_loader`` imports the module only when the backend is asked for.

Sharding uses the reader's own ``shard_id``/``num_shards`` with ``stick_to_shard=True`` (a fixed shard per
rank) and ``pad_last_batch=True``; the iterator knows the shard from ``reader_name`` and, with
``LastBatchPolicy.PARTIAL`` in evaluation, trims the padding, so every sample is seen exactly once across
ranks. Training uses ``LastBatchPolicy.DROP`` (never DALI's default FILL, which repeats samples); there
the file reader's ``random_shuffle`` also permutes the list once with DALI's fixed internal seed before
cutting shards, so DALI's training shards are a different partition than torch's and ffcv's: still the
same on every rank, disjoint, of equal size, and fixed across epochs.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
from torchvision.datasets.folder import IMG_EXTENSIONS

from .base import LoaderBase
from .config import LoaderConfig
from .convert import dali_index_path
from .imagefolder import DEFAULT_VALIDATE, scan_image_folder
from .sharding import sample_order, shard_bounds
from .wds_index import FIX_WDS, find_tar_shards, read_wds_index

__all__ = ["DaliLoader", "find_tar_shards"]

@dataclass
class _Source:
    """What the DALI reader reads: an ImageFolder's file list, or tar shards."""

    classes: list[str] | None
    skipped: list[tuple[str, str]]
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    tars: list[Path] | None = None
    index_paths: list[str] = field(default_factory=list)
    num_samples: int | None = None  # None: known once the reader has scanned the tars


def _resolve_source(source, config: LoaderConfig, *, skip_corrupt: bool, validate: str | bool) -> _Source:
    """What to read: a validated ImageFolder's files in the shared partition's order, or the tar shards
    with their index's classes, skipped files and sample count."""
    tars = find_tar_shards(source)
    if tars is None:
        index = scan_image_folder(source, validate=validate, skip_corrupt=skip_corrupt)
        # Pass the file list in the order of the shared partition (a seeded permutation cut to equal
        # shards for training), so that DALI's contiguous shards are exactly mixkit's shards.
        order = sample_order(len(index), world_size=config.world_size,
                             seed=config.seed if config.is_training else None, equal_size=config.is_training)
        return _Source(classes=index.classes, skipped=index.skipped,
                       files=[index.samples[i][0] for i in order],
                       labels=[index.samples[i][1] for i in order],
                       num_samples=len(order))
    try:
        listed = read_wds_index(tars[0].parent)
    except ValueError:
        if isinstance(source, (str, os.PathLike)):
            raise
        listed = None  # an explicit list of shards: their folder's indexes are not needed
    meta = listed[1] if listed is not None and set(listed[0]) >= set(tars) else {}
    # Index files from `mixkit convert --format wds` when all exist; else DALI scans the tars.
    index_paths = [str(dali_index_path(p)) for p in tars]
    return _Source(classes=meta.get("classes"), skipped=[tuple(s) for s in meta.get("skipped", [])],
                   tars=tars, index_paths=index_paths if all(Path(p).is_file() for p in index_paths) else [],
                   num_samples=meta.get("num_samples") if meta and set(listed[0]) == set(tars) else None)


def _build_pipeline(source: _Source, config: LoaderConfig, *, prefetch_queue_depth: int, initial_fill: int):
    """The DALI pipeline (not yet built): reader, decoder, crop/resize, flip and normalisation."""
    c = config
    gpu = c.device.type == "cuda"
    decoder_device, op_device = ("mixed", "gpu") if gpu else ("cpu", "cpu")
    mean255 = [m * 255 for m in c.mean]
    std255 = [s * 255 for s in c.std]
    layout = "HWC" if c.channels_last else "CHW"
    reader_args = dict(shard_id=c.rank, num_shards=c.world_size, stick_to_shard=True, pad_last_batch=True,
                       random_shuffle=c.is_training, initial_fill=initial_fill, name="Reader")

    @pipeline_def(batch_size=c.batch_size, num_threads=max(1, c.num_workers),
                  device_id=c.device.index if gpu else None, seed=c.seed + c.rank,
                  prefetch_queue_depth=prefetch_queue_depth)
    def pipeline():
        if source.tars is None:
            encoded, label = fn.readers.file(files=source.files, labels=source.labels, **reader_args)
        else:
            exts = ";".join(e.lstrip(".") for e in IMG_EXTENSIONS)
            encoded, label = fn.readers.webdataset(
                paths=[str(p) for p in source.tars], index_paths=source.index_paths, ext=[exts, "label"],
                dtypes=[types.UINT8, types.INT64], missing_component_behavior="error", **reader_args)
        if c.is_training:
            images = fn.decoders.image_random_crop(encoded, device=decoder_device, output_type=types.RGB,
                                                   random_area=list(c.scale),
                                                   random_aspect_ratio=list(c.ratio),
                                                   num_attempts=10)
            images = fn.resize(images, device=op_device, resize_x=c.img_size, resize_y=c.img_size,
                               interp_type=types.INTERP_LINEAR)
            mirror = fn.random.coin_flip(probability=c.hflip)
            images = fn.crop_mirror_normalize(images, device=op_device, dtype=types.FLOAT,
                                              output_layout=layout, mean=mean255, std=std255, mirror=mirror)
        else:
            images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB)
            images = fn.resize(images, device=op_device, resize_shorter=round(c.img_size / c.crop_pct),
                               interp_type=types.INTERP_LINEAR)
            images = fn.crop_mirror_normalize(images, device=op_device, dtype=types.FLOAT,
                                              output_layout=layout, crop=(c.img_size, c.img_size),
                                              crop_pos_x=0.5, crop_pos_y=0.5, mean=mean255, std=std255)
        return images, label

    return pipeline()


class DaliLoader(LoaderBase):
    """DALI loader with the same augmentation as the torch backend.

    Training: ``decoders.image_random_crop`` (``random_area=scale``, ``random_aspect_ratio=ratio``),
    ``resize`` to ``img_size`` and ``crop_mirror_normalize`` with a coin-flip mirror; evaluation:
    ``decoders.image``, ``resize(resize_shorter=img_size / crop_pct)`` and a centre
    ``crop_mirror_normalize``.

    Args:
        source: ImageFolder root, or webdataset shards (a .tar, a list, or a directory written by
            ``mixkit convert --format wds``; samples need a ``.label`` int64 component).
        config: The shared options (``LoaderConfig``); ``num_workers`` are DALI CPU threads, a CUDA
            ``device`` selects the mixed decoder and GPU operators, ``rank``/``world_size`` are the
            reader's shard_id/num_shards, and ``channels_last`` is DALI's HWC output (no copy).
        skip_corrupt: Skip bad files of an ImageFolder instead of raising (see ``scan_image_folder``).
        validate: How ImageFolder files are checked up front: 'full' (decoded once, verdicts cached),
            'header' or 'none' (see ``scan_image_folder``).
        prefetch_queue_depth: Batches DALI prepares ahead.
        initial_fill: Size of the reader's shuffle buffer (DALI shuffles through a buffer, not with a
            full permutation).
    """

    backend = "dali"

    def __init__(
            self,
            source: str | os.PathLike | Sequence[str | os.PathLike],
            config: LoaderConfig,
            *,
            skip_corrupt: bool = False,
            validate: str | bool = DEFAULT_VALIDATE,
            prefetch_queue_depth: int = 2,
            initial_fill: int = 1024,
    ) -> None:
        resolved = _resolve_source(source, config, skip_corrupt=skip_corrupt, validate=validate)
        super().__init__(config, classes=resolved.classes, skipped=resolved.skipped,
                         source=str(source) if isinstance(source, (str, os.PathLike)) else f"shards {list(map(str, source))}")
        if resolved.num_samples is not None:  # before building: DALI's readers fail on too few samples
            self._set_shard(self._rank_share(resolved.num_samples), resolved.num_samples)
        self.pipeline = _build_pipeline(resolved, config, prefetch_queue_depth=prefetch_queue_depth,
                                        initial_fill=initial_fill)
        self.pipeline.build()
        num_samples = int(self.pipeline.reader_meta("Reader")["epoch_size"])  # unpadded
        if resolved.num_samples is not None and num_samples != resolved.num_samples:
            raise ValueError(f"webdataset shards {[str(p) for p in resolved.tars or []]} hold {num_samples} "
                             f"samples but their index lists {resolved.num_samples}: {FIX_WDS} --overwrite.")
        self._set_shard(self._rank_share(num_samples), num_samples)
        policy = LastBatchPolicy.DROP if config.drop_last else LastBatchPolicy.PARTIAL
        self.iterator = DALIGenericIterator(self.pipeline, ["images", "labels"], reader_name="Reader",
                                            last_batch_policy=policy, auto_reset=True)

    def _rank_share(self, num_samples: int) -> int:
        # Tar shards cannot be cut to equal sizes before reading (an ImageFolder's list is), so training
        # counts num_samples // world_size per rank and _iter_epoch stops every rank after the same
        # number of batches; evaluation reads DALI's block of the list.
        c = self.config
        start, stop = shard_bounds(num_samples, c.rank, c.world_size)
        return num_samples // c.world_size if c.is_training else stop - start

    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # DALI's reader advances its own shuffle every pass; ``epoch`` cannot select it.
        num_batches = len(self)
        for i, batch in enumerate(self.iterator):
            if i >= num_batches:
                continue  # drained, not yielded: the iterator resets only at the end of its epoch
            images = batch[0]["images"]
            if self.config.channels_last:
                images = images.permute(0, 3, 1, 2)  # NHWC memory seen as NCHW: channels-last, no copy
            yield images, batch[0]["labels"]


