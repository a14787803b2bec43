"""A cache of full-decode verdicts of ImageFolder files, keyed by path, size and modification time.

``scan_image_folder(validate='full')`` decodes every file once to find corrupt and truncated ones (about
1.35 ms per JPEG); without a cache that cost came back on every start, every process of a distributed run,
every resume and every progressive-resize change. The verdict of a file (its decode error or None, and its
width and height, so that a backend's size test can be applied later) is kept per ImageFolder root in
``<cache dir>/validate-<hash of the root>.json`` and reused while the file's size and mtime (ns) are the ones
recorded, under the same Pillow version. Written atomically (``mixkit.atomic``), merged with what another
process wrote meanwhile: several processes may validate one folder at once, and each leaves a complete
file. A cache that cannot be read is ignored; one that cannot be written is a warning, never an error.

The verdicts go to ``$MIXKIT_VALIDATE_CACHE`` when set, else to ``validate/`` under mixkit's cache folder:
``$MIXKIT_CACHE`` (the variable benchmarks/deep_features.py reads too), else ``$XDG_CACHE_HOME/mixkit``, else
``~/.cache/mixkit``.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import PIL

from ..atomic import write_json_atomic

__all__ = ["Verdict", "VerdictCache", "cache_dir"]

_VERSION = 1
# (size, mtime_ns, reason or None, width, height) of one file.
Verdict = tuple[int, int, "str | None", int, int]


def cache_dir() -> Path:
    """The folder of the verdict files (see the module docstring)."""
    if os.environ.get("MIXKIT_VALIDATE_CACHE"):
        return Path(os.environ["MIXKIT_VALIDATE_CACHE"]).expanduser()
    if os.environ.get("MIXKIT_CACHE"):
        return Path(os.environ["MIXKIT_CACHE"]).expanduser() / "validate"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mixkit" / "validate"


class VerdictCache:
    """The recorded verdicts of the files under one ImageFolder root.

    Args:
        root: The ImageFolder root (its real path names the cache file).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self._base = os.path.abspath(root)  # keys are paths relative to the root as given (no file-system calls)
        self.root = os.path.realpath(root)
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:20]
        self.path = cache_dir() / f"validate-{digest}.json"
        self._entries = self._read()
        self._new: dict[str, list] = {}

    def _read(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != _VERSION or data.get("root") != self.root \
                or data.get("pillow") != PIL.__version__ or not isinstance(data.get("files"), dict):
            return {}  # another format, folder or decoder: verdicts are not reused
        return data["files"]

    @staticmethod
    def _stamp(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def _key(self, path: str) -> str:
        return os.path.relpath(os.path.abspath(path), self._base)

    def get(self, path: str) -> tuple[str | None, int, int] | None:
        """(reason, width, height) recorded for ``path`` at its current size and mtime, or None."""
        entry = self._entries.get(self._key(path))
        stamp = self._stamp(path)
        if entry is None or stamp is None or tuple(entry[:2]) != stamp:
            return None
        return entry[2], entry[3], entry[4]

    def put(self, path: str, reason: str | None, width: int, height: int) -> None:
        """Records the verdict of ``path`` at its current size and mtime (saved by ``save``)."""
        stamp = self._stamp(path)
        if stamp is not None:
            self._new[self._key(path)] = [*stamp, reason, int(width), int(height)]

    def save(self) -> None:
        """Writes the new verdicts, merged with the file as it is now (another process may have added
        some); a warning if the cache directory is not writable."""
        if not self._new:
            return
        files = {**self._read(), **self._new}
        try:
            write_json_atomic(self.path, {"version": _VERSION, "root": self.root, "pillow": PIL.__version__,
                                          "files": files}, indent=None)
        except OSError as e:
            warnings.warn(f"could not write the validation cache {self.path} ({e}): the next start decodes every "
                          "image again; set MIXKIT_VALIDATE_CACHE (or MIXKIT_CACHE) to a writable folder, or use --validate header",
                          stacklevel=3)
            return
        self._entries, self._new = files, {}
