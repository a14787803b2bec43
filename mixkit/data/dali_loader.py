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

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
from torchvision.datasets.folder import IMG_EXTENSIONS

from .base import LoaderBase
from .convert import dali_index_path
from .imagefolder import scan_image_folder
from .sharding import sample_order, shard_bounds

__all__ = ["DaliLoader", "find_tar_shards"]


def find_tar_shards(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path] | None:
    """The webdataset shards named by ``source`` (a .tar, a list of them, or a directory holding only
    .tar files), or None when ``source`` is an ImageFolder.

    Raises:
        FileNotFoundError: A named .tar is missing.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            tars = sorted(path.glob("*.tar"))
            others = [p for p in path.iterdir() if p.suffix not in (".tar", ".json", ".idx")]
            return tars if tars and not others else None
        if path.suffix != ".tar":
            return None
        paths = [path]
    else:
        paths = [Path(p) for p in source]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"webdataset shards {missing} do not exist: write them with "
                                "`mixkit convert IMAGEFOLDER OUT_DIR --format wds`.")
    return paths


class DaliLoader(LoaderBase):
    """DALI loader with the same augmentation as the torch backend.

    Training: ``decoders.image_random_crop`` (``random_area=scale``, ``random_aspect_ratio=ratio``),
    ``resize`` to ``img_size`` and ``crop_mirror_normalize`` with a coin-flip mirror; evaluation:
    ``decoders.image``, ``resize(resize_shorter=img_size / crop_pct)`` and a centre
    ``crop_mirror_normalize``.

    Args:
        source: ImageFolder root, or webdataset shards (a .tar, a list, or a directory of .tar files
            written by ``mixkit convert --format wds``; samples need a ``.label`` int64 component).
        batch_size: Samples per batch.
        is_training: Training or evaluation mode.
        img_size: Output side length.
        num_workers: DALI CPU threads.
        device: Target device; CUDA selects the mixed decoder and GPU operators.
        channels_last: Return channels-last images (DALI writes HWC: no copy).
        drop_last: Drop the last incomplete batch.
        rank: Global rank (the reader's shard_id).
        world_size: Number of processes (the reader's num_shards).
        seed: Seed of the shard partition and of DALI's random operators.
        mean: Normalisation mean (0-1 scale).
        std: Normalisation std (0-1 scale).
        crop_pct: Evaluation centre-crop fraction.
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: Horizontal flip probability.
        skip_corrupt: Skip bad files of an ImageFolder instead of raising (see ``scan_image_folder``).
        validate: Decode every ImageFolder file once up front to find bad ones.
        prefetch_queue_depth: Batches DALI prepares ahead.
        initial_fill: Size of the reader's shuffle buffer (DALI shuffles through a buffer, not with a
            full permutation).
    """

    backend = "dali"

    def __init__(
            self,
            source: str | os.PathLike | Sequence[str | os.PathLike],
            *,
            batch_size: int,
            is_training: bool,
            img_size: int,
            num_workers: int,
            device: torch.device,
            channels_last: bool,
            drop_last: bool,
            rank: int,
            world_size: int,
            seed: int,
            mean: tuple[float, float, float],
            std: tuple[float, float, float],
            crop_pct: float,
            scale: tuple[float, float],
            ratio: tuple[float, float],
            hflip: float,
            skip_corrupt: bool = False,
            validate: bool = True,
            prefetch_queue_depth: int = 2,
            initial_fill: int = 1024,
    ) -> None:
        tars = find_tar_shards(source)
        reader_args = dict(shard_id=rank, num_shards=world_size, stick_to_shard=True, pad_last_batch=True,
                           random_shuffle=is_training, initial_fill=initial_fill, name="Reader")
        if tars is None:
            index = scan_image_folder(source, validate=validate, skip_corrupt=skip_corrupt)
            classes, skipped = index.classes, index.skipped
            # Pass the file list in the order of the shared partition (a seeded permutation cut to equal
            # shards for training), so that DALI's contiguous shards are exactly mixkit's shards.
            order = sample_order(len(index), world_size=world_size, seed=seed if is_training else None,
                                 equal_size=is_training)
            files = [index.samples[i][0] for i in order]
            labels = [index.samples[i][1] for i in order]
            num_samples = len(files)
        else:
            meta_files = sorted(tars[0].parent.glob("*.json"))
            meta = json.loads(meta_files[0].read_text()) if meta_files else {}
            classes, skipped = meta.get("classes"), [tuple(s) for s in meta.get("skipped", [])]
            num_samples = None
            # Index files from `mixkit convert --format wds` when all exist; else DALI scans the tars.
            index_paths = [str(dali_index_path(p)) for p in tars]
            if not all(Path(p).is_file() for p in index_paths):
                index_paths = []
        super().__init__(batch_size=batch_size, is_training=is_training, device=device,
                         channels_last=channels_last, drop_last=drop_last, rank=rank, world_size=world_size,
                         classes=classes, skipped=skipped)

        gpu = device.type == "cuda"
        decoder_device, op_device = ("mixed", "gpu") if gpu else ("cpu", "cpu")
        mean255 = [m * 255 for m in mean]
        std255 = [s * 255 for s in std]
        layout = "HWC" if channels_last else "CHW"

        @pipeline_def(batch_size=batch_size, num_threads=max(1, num_workers),
                      device_id=device.index if gpu else None, seed=seed + rank,
                      prefetch_queue_depth=prefetch_queue_depth)
        def pipeline():
            if tars is None:
                encoded, label = fn.readers.file(files=files, labels=labels, **reader_args)
            else:
                exts = ";".join(e.lstrip(".") for e in IMG_EXTENSIONS)
                encoded, label = fn.readers.webdataset(
                    paths=[str(p) for p in tars], index_paths=index_paths, ext=[exts, "label"],
                    dtypes=[types.UINT8, types.INT64], missing_component_behavior="error", **reader_args)
            if is_training:
                images = fn.decoders.image_random_crop(encoded, device=decoder_device, output_type=types.RGB,
                                                       random_area=list(scale), random_aspect_ratio=list(ratio),
                                                       num_attempts=10)
                images = fn.resize(images, device=op_device, resize_x=img_size, resize_y=img_size,
                                   interp_type=types.INTERP_LINEAR)
                mirror = fn.random.coin_flip(probability=hflip)
                images = fn.crop_mirror_normalize(images, device=op_device, dtype=types.FLOAT,
                                                  output_layout=layout, mean=mean255, std=std255, mirror=mirror)
            else:
                images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB)
                images = fn.resize(images, device=op_device, resize_shorter=round(img_size / crop_pct),
                                   interp_type=types.INTERP_LINEAR)
                images = fn.crop_mirror_normalize(images, device=op_device, dtype=types.FLOAT,
                                                  output_layout=layout, crop=(img_size, img_size),
                                                  crop_pos_x=0.5, crop_pos_y=0.5, mean=mean255, std=std255)
            return images, label

        self.pipeline = pipeline()
        self.pipeline.build()
        if num_samples is None:
            num_samples = int(self.pipeline.reader_meta("Reader")["epoch_size"])  # unpadded
        start, stop = shard_bounds(num_samples, rank, world_size)
        self._shard_size = stop - start
        if is_training:
            # Tar shards cannot be cut to equal sizes before reading (an ImageFolder's list is), so
            # training counts num_samples // world_size per rank and _iter_epoch stops every rank after
            # the same number of batches.
            self._shard_size = num_samples // world_size
        if self._shard_size == 0 and is_training:
            raise ValueError(f"rank {rank} of {world_size} has no training sample ({num_samples} in all).")
        policy = LastBatchPolicy.DROP if drop_last else LastBatchPolicy.PARTIAL
        self.iterator = DALIGenericIterator(self.pipeline, ["images", "labels"], reader_name="Reader",
                                            last_batch_policy=policy, auto_reset=True)

    @property
    def shard_size(self) -> int:
        return self._shard_size

    def _iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # DALI's reader advances its own shuffle every pass; ``epoch`` cannot select it.
        num_batches = len(self)
        for i, batch in enumerate(self.iterator):
            if i >= num_batches:
                continue  # drained, not yielded: the iterator resets only at the end of its epoch
            images = batch[0]["images"]
            if self.channels_last:
                images = images.permute(0, 3, 1, 2)  # NHWC memory seen as NCHW: channels-last, no copy
            yield images, batch[0]["labels"]


