"""The .beton files of the 'ffcv' backend: integrity check, sidecar, and the image sizes FFCV can decode.

FFCV's ``Reader`` trusts the file: a .beton cut short (a conversion killed mid-write, a partial copy)
passes it and then aborts the process inside OpenCV when a sample's bytes are missing. ``check_beton``
verifies the structure first (header, field table, the metadata of every sample, the allocation table at
the end, every sample's data inside the file) and refuses an incomplete file with a ValueError.

The ``<out>.beton.json`` sidecar records the class names and the skipped files, plus the .beton's size and
a SHA-256 of its header, metadata and allocation table, so that a sidecar that does not describe the file
beside it is detected instead of trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BETON_FIELDS", "BetonInfo", "check_beton", "ffcv_size_problem", "read_sidecar", "sidecar_path"]

BETON_FIELDS = {"image": "RGBImageField", "label": "IntField"}
_FIX = "write it again with `mixkit convert IMAGEFOLDER OUT.beton`"


@dataclass(frozen=True)
class BetonInfo:
    """What ``check_beton`` verified.

    Attributes:
        path: The .beton.
        num_samples: Samples in the file.
        widths: Stored width of every image.
        heights: Stored height of every image.
        labels: Every label.
        fingerprint: Size and SHA-256 of the file's index (header, metadata, allocation table).
    """

    path: Path
    num_samples: int
    widths: np.ndarray
    heights: np.ndarray
    labels: np.ndarray
    fingerprint: dict


def sidecar_path(beton: str | os.PathLike) -> Path:
    """The JSON written next to a .beton."""
    return Path(str(beton) + ".json")


FFCV_MAX_SIDE = 65535  # ffcv's RGBImageField stores width and height as uint16


def ffcv_size_problem(width: int, height: int, *, max_resolution: int | None = None,
                      crop_pct: float | None = None) -> str | None:
    """Why FFCV cannot process an image of this size, or None.

    FFCV's writer resizes the longer side to ``max_resolution`` with integer truncation (a side can
    become 0, which fails in its worker and hangs the writer); its evaluation decoder centre-crops
    ``int(crop_pct * shorter side)`` pixels, and an empty crop aborts the process in OpenCV. Without
    ``crop_pct`` the check is for any crop_pct of at least 0.5 (a stored side of at least 2 px). FFCV
    stores each side as a uint16, so a stored side above 65,535 px fails in its writer too (and hangs it).
    """
    w, h = width, height
    if max_resolution is not None and max(w, h) > max_resolution:
        ratio = max_resolution / max(w, h)
        w, h = int(ratio * w), int(ratio * h)  # FFCV's resizer: astype(int)
    stored = f"{w}x{h} px" + (f" after resizing to --max-resolution {max_resolution}"
                              if (w, h) != (width, height) else "")
    if min(w, h) < 1:
        return f"too small for ffcv: its shorter side becomes 0 px ({width}x{height} resized to " \
               f"max_resolution {max_resolution})"
    if max(w, h) > FFCV_MAX_SIDE:
        return f"too large for ffcv: stored as {stored}, and ffcv records each side as a uint16 (at most " \
               f"{FFCV_MAX_SIDE} px; a larger side fails in its writer's worker and hangs the writer): " \
               "convert with --max-resolution (default 512)"
    if crop_pct is None:
        if min(w, h) < 2:
            return f"too small for ffcv: stored as {stored}, and ffcv's evaluation centre crop " \
                   "(int(crop_pct * shorter side) px) needs a side of at least 2 px"
    elif int(crop_pct * min(w, h)) < 1:
        return f"too small for ffcv: stored as {stored}, an empty centre crop at crop_pct={crop_pct}"
    return None


def _refuse(path: Path, problem: str) -> ValueError:
    return ValueError(f"{str(path)!r} is not a readable FFCV .beton ({problem}); {_FIX}.")


def check_beton(path: str | os.PathLike) -> BetonInfo:
    """Checks that ``path`` is a complete .beton with mixkit's schema.

    Raises:
        FileNotFoundError: No such file, or a directory (an ImageFolder needs converting first).
        ValueError: Not a .beton, an incomplete one (cut short, or never finished), or one with other fields.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is a directory; the ffcv backend reads a .beton: convert the "
                                f"ImageFolder first with `mixkit convert {path} OUT.beton`.")
    if not path.is_file():
        raise FileNotFoundError(f".beton file {str(path)!r} does not exist: write it with "
                                "`mixkit convert IMAGEFOLDER OUT.beton`.")
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, TYPE_ID_HANDLER, FieldDescType, HeaderType

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HeaderType.itemsize)
        if len(head) < HeaderType.itemsize:
            raise _refuse(path, f"{size} bytes, shorter than the header")
        header = np.frombuffer(head, HeaderType)[0]
        if header["version"] != CURRENT_VERSION:
            raise _refuse(path, f"format version {header['version']}, FFCV reads {CURRENT_VERSION}")
        num_fields, num_samples = int(header["num_fields"]), int(header["num_samples"])
        fields_end = HeaderType.itemsize + num_fields * FieldDescType.itemsize
        if size < fields_end:
            raise _refuse(path, "cut short inside the field table")
        fields = np.frombuffer(f.read(num_fields * FieldDescType.itemsize), FieldDescType)
        names = [bytes(d["name"]).rstrip(b"\0").decode("ascii", "replace") for d in fields]
        types = [TYPE_ID_HANDLER.get(int(d["type_id"])) for d in fields]
        found = {n: t.__name__ if t else f"type {int(d['type_id'])}"
                 for n, t, d in zip(names, types, fields, strict=True)}
        if found != BETON_FIELDS:
            raise ValueError(f".beton {str(path)!r} has fields {found}; the ffcv backend needs "
                             f"{BETON_FIELDS} (as written by `mixkit convert`).")
        handlers = [t.from_binary(d["arguments"]) for t, d in zip(types, fields, strict=True)]
        meta_type = np.dtype([(n, h.metadata_type) for n, h in zip(names, handlers, strict=True)], align=True)
        data_start = fields_end + num_samples * meta_type.itemsize
        alloc_ptr = int(header["alloc_table_ptr"])
        if size < data_start:
            raise _refuse(path, f"cut short inside the metadata of its {num_samples} samples")
        if not data_start <= alloc_ptr <= size:
            raise _refuse(path, "no allocation table: the file was cut short or never finished")
        if (size - alloc_ptr) % ALLOC_TABLE_TYPE.itemsize:
            raise _refuse(path, "cut short inside the allocation table")
        metadata = np.frombuffer(f.read(num_samples * meta_type.itemsize), meta_type)
        f.seek(alloc_ptr)
        table_bytes = f.read()
    alloc = np.frombuffer(table_bytes, ALLOC_TABLE_TYPE)
    if len(alloc) and (alloc["ptr"].min() < data_start or (alloc["ptr"] + alloc["size"]).max() > alloc_ptr):
        raise _refuse(path, "a sample's data lies outside the data region")
    image = metadata["image"]
    # Every sample's image bytes must be an allocation of the table, inside the file.
    present = np.isin(image["data_ptr"], alloc["ptr"])
    if not present.all():
        raise _refuse(path, f"the data of {int((~present).sum())} of its {num_samples} samples is missing")
    if num_samples and (image["width"].min() < 1 or image["height"].min() < 1 or image["mode"].max() > 1):
        raise _refuse(path, "a sample has an empty image or an unknown storage mode")
    digest = hashlib.sha256(head)
    digest.update(fields.tobytes())
    digest.update(metadata.tobytes())
    digest.update(table_bytes)
    return BetonInfo(path=path, num_samples=num_samples, widths=image["width"].astype(np.int64),
                     heights=image["height"].astype(np.int64), labels=metadata["label"].astype(np.int64),
                     fingerprint={"size": size, "index_sha256": digest.hexdigest()})


def read_sidecar(beton: str | os.PathLike, info: BetonInfo | None = None) -> dict | None:
    """The sidecar's content, or None when the .beton has none (written by other tools).

    Args:
        beton: The .beton.
        info: ``check_beton``'s result; when given, the sidecar must describe this file.

    Raises:
        ValueError: The sidecar is not JSON, or it describes another file (its size, index checksum or
            sample count differ), e.g. after copying one of the two files only.
    """
    path = sidecar_path(beton)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"sidecar {str(path)!r} is not valid JSON ({e}): delete it, or convert "
                         "again.") from e
    if info is not None:
        recorded = meta.get("beton")
        if meta.get("num_samples") != info.num_samples or (recorded is not None and
                                                           recorded != info.fingerprint):
            raise ValueError(f"sidecar {str(path)!r} does not describe the .beton beside it (recorded "
                             f"{meta.get('num_samples')} samples, {recorded}; the file has "
                             f"{info.num_samples}, {info.fingerprint}): convert again, or delete the sidecar "
                             "to load the .beton without class names.")
    return meta
