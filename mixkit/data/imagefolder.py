"""ImageFolder scanning and validation shared by every loader backend.

One policy for bad input, whatever backend reads the data afterwards: a missing root, a root without
class folders and an empty class folder always raise; a corrupt or truncated image, a non-image file
or a file outside a class folder raises too, listing the bad files, unless ``skip_corrupt=True``, which
skips them, counts them in ``ImageFolderIndex.skipped`` and reports them with a ``BadSampleWarning``.
Hidden entries (names starting with '.', such as .DS_Store or .ipynb_checkpoints) are not data and are
ignored everywhere.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = ["BadSampleWarning", "ImageFolderIndex", "scan_image_folder", "validate_image"]

_MAX_LISTED = 10


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


def validate_image(path: str | os.PathLike) -> str | None:
    """Decodes an image file completely and says what is wrong with it.

    JPEGs decode in PIL's draft mode (DCT scaling): every byte of the entropy-coded stream is still read,
    so truncation is detected, at a fraction of the cost of a full-size decode.

    Args:
        path: Image file.

    Returns:
        None for a good image, else the reason it is bad.
    """
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in IMG_EXTENSIONS:
        return f"not an image file (extension {ext or 'none'!r}; accepted: {', '.join(IMG_EXTENSIONS)})"
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad files
        return f"corrupt or truncated image ({type(e).__name__}: {e})"
    return None


def _walk_files(directory: Path) -> list[str]:
    # The same order as torchvision's make_dataset, so that indices agree with torchvision's ImageFolder.
    files = []
    for dirpath, dirnames, fnames in sorted(os.walk(directory, followlinks=True)):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in sorted(f for f in fnames if not f.startswith(".")):
            files.append(os.path.join(dirpath, fname))
    return files


def _format_bad(bad: list[tuple[str, str]]) -> str:
    lines = [f"  {p}: {reason}" for p, reason in bad[:_MAX_LISTED]]
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more")
    return "\n".join(lines)


def scan_image_folder(
        root: str | os.PathLike,
        *,
        validate: bool = True,
        skip_corrupt: bool = False,
        num_threads: int | None = None,
) -> ImageFolderIndex:
    """Scans and validates an ImageFolder (``root/<class>/**/<image>``).

    Args:
        root: ImageFolder root, one sub-folder per class.
        validate: Decode every image to find corrupt and truncated files (recommended; costs one
            reduced-size decode per file). Without it only file extensions are checked.
        skip_corrupt: Skip bad files (counted in ``skipped`` and reported by a ``BadSampleWarning``)
            instead of raising.
        num_threads: Threads for validation; defaults to the CPU count.

    Returns:
        The index of good samples.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a directory.
        ValueError: No class folder, an empty class folder, or bad files without ``skip_corrupt``.
    """
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

    bad: list[tuple[str, str]] = [(e.path, "file outside any class folder") for e in entries if not e.is_dir()]
    candidates: list[tuple[str, int]] = []
    empty = []
    for c in classes:
        files = _walk_files(root / c)
        if not files:
            empty.append(c)
        candidates.extend((f, class_to_idx[c]) for f in files)
    if empty:
        raise ValueError(f"ImageFolder {str(root)!r} has empty class folders {empty}: every class needs at "
                         "least one image; remove the folders or add images (label ids follow the sorted "
                         "folder names, so an empty class cannot be dropped silently).")

    paths = [p for p, _ in candidates]
    if validate:
        with ThreadPoolExecutor(max_workers=num_threads or os.cpu_count() or 1) as pool:
            reasons = list(pool.map(validate_image, paths, chunksize=16))
    else:
        reasons = [None if os.path.splitext(p)[1].lower() in IMG_EXTENSIONS
                   else "not an image file (extension not in torchvision's IMG_EXTENSIONS)" for p in paths]
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
    now_empty = sorted({c for c in classes} - {classes[y] for _, y in samples})
    if now_empty:
        raise ValueError(f"ImageFolder {str(root)!r}: class folders {now_empty} hold only bad files; "
                         "repair them or remove the folders.")
    return ImageFolderIndex(root=root, classes=classes, class_to_idx=class_to_idx, samples=samples,
                            skipped=bad)
