"""ImageFolder scanning and validation shared by every loader backend.

One policy for bad input, whatever backend reads the data afterwards: a missing root, a root without
class folders and an empty class folder always raise; a corrupt or truncated image, a non-image file
or a file outside a class folder raises too, listing the bad files, unless ``skip_corrupt=True``, which
skips them, counts them in ``ImageFolderIndex.skipped`` and reports them with a ``BadSampleWarning``.
Hidden entries (names starting with '.', such as .DS_Store or .ipynb_checkpoints, at any depth) are not
data and are ignored everywhere. Symbolic links are followed, but every file is read once: a link back to
a folder already being read (a loop) or to a file already listed is a bad entry like a corrupt file.

Checking: ``validate='full'`` (the default) decodes every file once, and keeps each verdict in a cache keyed
by path, size and mtime (``mixkit.data.verdicts``), so that only new or changed files are decoded again at
the next start; ``'header'`` reads each file's header only (format, pixel mode, size: non-images, unreadable
modes and sizes a backend refuses are found, truncated data is not); ``'none'`` checks file extensions only.

Pixels: every backend must decode a file to the same pixels, so ``load_rgb`` (the 'torch' backend's and
the .beton writer's reader) scales 16-bit images to 8 bits as DALI's decoder does, instead of PIL's
``convert('RGB')``, which saturates 16-bit grey to white, and applies an EXIF orientation tag as DALI's
decoders do; 32-bit integer and float images have no common
8-bit reading and are refused by ``validate_image``.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = ["DEFAULT_VALIDATE", "VALIDATE_HELP", "VALIDATE_MODES", "BadSampleWarning", "ImageFolderIndex",
           "load_rgb", "scan_image_folder", "to_rgb", "validate_image"]

VALIDATE_MODES = ("none", "header", "full")
# Full decoding keeps today's guarantee (no corrupt or truncated file reaches a training worker, where it
# would stop the run hours in); the verdict cache makes it a one-time cost per file version.
DEFAULT_VALIDATE = "full"
# The --validate help of mixkit-train and mixkit-eval, declared once.
VALIDATE_HELP = ("how ImageFolder files are checked before the first batch: full (default) decodes each file "
                 "once and caches the verdict by path, size and mtime, so later starts, resumes and other "
                 "processes decode only new or changed files (a cached start costs about one stat per file); header "
                 "reads headers only (finds non-images, unreadable pixel formats and unusable sizes, not truncated "
                 "data; for a first start on a large dataset); none checks file extensions only")

_MAX_LISTED = 10
# PIL modes of 16-bit grey samples (PNG, TIFF); 16-bit RGB(A) PNGs already open as 8-bit RGB(A).
_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# Modes with no 8-bit reading that every backend shares.
_MODES_REFUSED = {"I": "32-bit integer", "F": "32-bit float"}


class BadSampleWarning(UserWarning):
    """Raised as a warning when bad files are skipped under ``skip_corrupt=True``."""


@dataclass(frozen=True)
class ImageFolderIndex:
    """The validated content of an ImageFolder.

    Attributes:
        root: The ImageFolder root.
        classes: Class folder names, sorted; a label is an index into this list.
        class_to_idx: Class folder name to label.
        samples: (path, label) pairs in torchvision's ImageFolder order.
        skipped: (path, reason) pairs for the bad files that ``skip_corrupt=True`` left out.
    """

    root: Path
    classes: list[str]
    class_to_idx: dict[str, int]
    samples: list[tuple[str, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``img``; 16-bit samples are scaled to 8 bits (v * 255 / 65535, rounded, as
    DALI's decoder does) rather than clipped.

    Raises:
        ValueError: A 32-bit integer or float image (see ``validate_image``).
    """
    if img.mode in _MODES_REFUSED:
        raise ValueError(_refused_reason(img.mode))
    if img.mode in _MODES_16BIT:
        grey = np.asarray(img).astype(np.uint32)
        img = Image.fromarray(((grey * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Reads an image file as 8-bit RGB (``to_rgb``), upright: an EXIF orientation tag is applied, as
    DALI's decoders apply it (a camera photo stored sideways would otherwise differ between backends)."""
    with Image.open(path) as img:
        return to_rgb(ImageOps.exif_transpose(img))


def _refused_reason(mode: str) -> str:
    return (f"unsupported pixel format: {_MODES_REFUSED[mode]} samples (PIL mode {mode!r}) have no 8-bit "
            "reading that every backend shares; save the file with 8- or 16-bit samples")


def _extension_problem(path: str | os.PathLike) -> str | None:
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in IMG_EXTENSIONS:
        return f"not an image file (extension {ext or 'none'!r}; accepted: {', '.join(IMG_EXTENSIONS)})"
    return None


def _read_verdict(path: str | os.PathLike, full: bool) -> tuple[str | None, int, int]:
    # (reason or None, width, height): the file's header, and with `full` its whole data.
    try:
        with Image.open(path) as img:
            if img.mode in _MODES_REFUSED:
                return _refused_reason(img.mode), *img.size
            size = img.size
            if full:
                if img.format == "JPEG":
                    img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad files
        return f"corrupt or truncated image ({type(e).__name__}: {e})", 0, 0
    return None, *size


def validate_image(
        path: str | os.PathLike,
        check_size: Callable[[int, int], str | None] | None = None,
        *,
        full: bool = True,
) -> str | None:
    """Decodes an image file completely (or reads its header) and says what is wrong with it.

    JPEGs decode in PIL's draft mode (DCT scaling): every byte of the entropy-coded stream is still read,
    so truncation is detected, at a fraction of the cost of a full-size decode.

    Args:
        path: Image file.
        check_size: A backend's test of the image's (width, height), returning a reason or None (e.g.
            too small for FFCV's decoders).
        full: Decode the whole file; False reads the header only (format, pixel mode and size; truncated
            data goes unnoticed).

    Returns:
        None for a good image, else the reason it is bad.
    """
    reason = _extension_problem(path)
    if reason is None:
        reason = _with_size_check(*_read_verdict(path, full), check_size)
    return reason


def _with_size_check(reason: str | None, width: int, height: int, check_size) -> str | None:
    # A decoded file's verdict, then the backend's size test on a good one.
    return reason if reason is not None or check_size is None else check_size(width, height)


def _validate_cached(paths: list[str], root: Path, check_size, num_threads: int | None) -> list[str | None]:
    """Full verdicts of ``paths``, decoding only the files the cache holds no verdict for at their current
    size and mtime."""
    from .verdicts import VerdictCache

    cache = VerdictCache(root)
    reasons: list[str | None] = [None] * len(paths)
    todo = []
    for i, path in enumerate(paths):
        reasons[i] = _extension_problem(path)
        if reasons[i] is not None:
            continue
        hit = cache.get(path)
        if hit is None:
            todo.append(i)
            continue
        reasons[i] = _with_size_check(*hit, check_size)
    if todo:
        with ThreadPoolExecutor(max_workers=num_threads or os.cpu_count() or 1) as pool:
            verdicts = list(pool.map(partial(_read_verdict, full=True), [paths[i] for i in todo], chunksize=16))
        for i, (reason, width, height) in zip(todo, verdicts, strict=True):
            cache.put(paths[i], reason, width, height)
            reasons[i] = _with_size_check(reason, width, height, check_size)
        cache.save()
    return reasons


def _validate_mode(validate: bool | str) -> str:
    if validate is True or validate is False:  # the former switch: True decoded everything
        return "full" if validate else "none"
    if validate not in VALIDATE_MODES:
        raise ValueError(f"validate={validate!r}: choose one of {', '.join(VALIDATE_MODES)} (CLI: --validate).")
    return validate


def _walk_class(class_dir: Path, root: Path, seen_dirs: dict[str, str],
                bad: list[tuple[str, str]]) -> list[str]:
    """The files of one class folder in torchvision's make_dataset order (sorted folder paths, sorted
    names), without hidden entries. A linked folder already read (a symlink loop, the root, another class)
    is not entered and is added to ``bad``."""
    root_real = Path(os.path.realpath(root))
    folders = []
    # Top-down, pruning hidden and revisited folders in place before os.walk descends into them.
    for dirpath, dirnames, fnames in os.walk(class_dir, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            path = os.path.join(dirpath, d)
            if d.startswith("."):
                continue
            real = os.path.realpath(path)
            if real in seen_dirs or root_real.is_relative_to(real):
                target = seen_dirs.get(real, os.path.relpath(real, root_real))
                bad.append((path, f"symlink loop or repeated folder: {os.path.relpath(path, root)} -> "
                                  f"{target}, a folder already read (every file is read once)"))
                continue
            seen_dirs[real] = os.path.relpath(path, root)
            keep.append(d)
        dirnames[:] = keep
        folders.append((dirpath, sorted(f for f in fnames if not f.startswith("."))))
    return [os.path.join(dirpath, f) for dirpath, fnames in sorted(folders) for f in fnames]


def _read_once(candidates: list[tuple[str, int]], root: Path,
               bad: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """Drops all but one path to each real file: the one reached without links when there is one (so a
    link never takes a file from its own class), else the first."""
    by_real: dict[str, list[int]] = {}
    for i, (path, _) in enumerate(candidates):
        by_real.setdefault(os.path.realpath(path), []).append(i)
    dropped = set()
    for real, group in by_real.items():
        if len(group) < 2:
            continue
        keep = next((i for i in group if os.path.abspath(candidates[i][0]) == real), group[0])
        for i in group:
            if i != keep:
                dropped.add(i)
                first = os.path.relpath(candidates[keep][0], root)
                bad.append((candidates[i][0], f"the same file as {first} (a link; every file is read once)"))
    return [c for i, c in enumerate(candidates) if i not in dropped]


def _format_bad(bad: list[tuple[str, str]]) -> str:
    lines = [f"  {p}: {reason}" for p, reason in bad[:_MAX_LISTED]]
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more")
    return "\n".join(lines)


def scan_image_folder(
        root: str | os.PathLike,
        *,
        validate: str | bool = DEFAULT_VALIDATE,
        skip_corrupt: bool = False,
        num_threads: int | None = None,
        check_size: Callable[[int, int], str | None] | None = None,
        cache: bool = True,
) -> ImageFolderIndex:
    """Scans and validates an ImageFolder (``root/<class>/**/<image>``).

    Args:
        root: ImageFolder root, one sub-folder per class.
        validate: 'full' decodes every image to find corrupt and truncated files (one reduced-size decode
            per file, cached); 'header' reads each file's header (format, pixel mode, size); 'none' checks
            file extensions only. True and False are 'full' and 'none'.
        skip_corrupt: Skip bad files (counted in ``skipped`` and reported by a ``BadSampleWarning``)
            instead of raising.
        num_threads: Threads for validation; defaults to the CPU count.
        check_size: With 'full' or 'header', a backend's test of each image's (width, height) (see
            ``validate_image``); a failing image is a bad file.
        cache: With 'full', reuse and record verdicts in the cache (``mixkit.data.verdicts``).

    Returns:
        The index of good samples.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a directory.
        ValueError: No class folder, an empty class folder, or bad files without ``skip_corrupt``.
    """
    mode = _validate_mode(validate)
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"ImageFolder root {str(root)!r} does not exist: pass the directory that "
                                "holds one sub-folder per class.")
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder root {str(root)!r} is not a directory: pass the directory "
                                "that holds one sub-folder per class.")
    entries = sorted((e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir()]
    if not classes:
        raise ValueError(f"ImageFolder root {str(root)!r} has no class sub-folders: expected "
                         "root/<class>/<image>.")
    class_to_idx = {c: i for i, c in enumerate(classes)}

    bad = [(e.path, "file outside any class folder") for e in entries if not e.is_dir()]
    candidates: list[tuple[str, int]] = []
    seen_dirs = {os.path.realpath(root / c): c for c in classes}
    for c in classes:
        candidates.extend((f, class_to_idx[c]) for f in _walk_class(root / c, root, seen_dirs, bad))
    empty = sorted(set(classes) - {classes[y] for _, y in candidates})
    if empty:
        raise ValueError(f"ImageFolder {str(root)!r} has empty class folders {empty}: every class needs at "
                         "least one image; remove the folders or add images (label ids follow the sorted "
                         "folder names, so an empty class cannot be dropped silently).")

    candidates = _read_once(candidates, root, bad)
    paths = [p for p, _ in candidates]
    if mode == "full" and cache:
        reasons = _validate_cached(paths, root, check_size, num_threads)
    elif mode != "none":
        with ThreadPoolExecutor(max_workers=num_threads or os.cpu_count() or 1) as pool:
            reasons = list(pool.map(partial(validate_image, check_size=check_size, full=mode == "full"), paths,
                                    chunksize=16))
    else:
        reasons = [_extension_problem(p) for p in paths]
    bad.extend((p, r) for p, r in zip(paths, reasons, strict=True) if r is not None)
    bad_set = {p for p, _ in bad}
    samples = [(p, y) for p, y in candidates if p not in bad_set]

    if bad and not skip_corrupt:
        raise ValueError(f"ImageFolder {str(root)!r} has {len(bad)} bad file(s):\n{_format_bad(bad)}\n"
                         "Repair or delete them, or pass skip_corrupt=True (CLI: --skip-corrupt) to skip "
                         "them; skipped files are counted and reported.")
    if bad:
        warnings.warn(f"skipped {len(bad)} bad file(s) in ImageFolder {str(root)!r} (listed in the "
                      f"loader's .skipped):\n{_format_bad(bad)}", BadSampleWarning, stacklevel=2)
    now_empty = sorted(set(classes) - {classes[y] for _, y in samples})
    if now_empty:
        raise ValueError(f"ImageFolder {str(root)!r}: class folders {now_empty} hold only bad files; "
                         "repair them or remove the folders.")
    return ImageFolderIndex(root=root, classes=classes, class_to_idx=class_to_idx, samples=samples,
                            skipped=bad)
