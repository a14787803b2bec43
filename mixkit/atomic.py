"""Writing outputs so that a reader sees the old output or the complete new one, never a partial one.

One place for every atomic write of the package: converted datasets, run files, weights, reports and
figures.

Files and directories are written under a hidden temporary name beside the target (same file system)
and moved into place with one rename once complete. A process killed before that leaves the target
untouched (and a ``.<name>.tmp-*`` entry behind, which no reader looks at).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "replace_dir",
    "save_figure_atomic",
    "temp_dir_beside",
    "temp_file_beside",
    "write_json_atomic",
    "write_text_atomic",
]


@contextlib.contextmanager
def temp_file_beside(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target``, removed unless the body moved it away."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would leave the renamed output unreadable to others
    try:
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def temp_dir_beside(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside ``target``, removed unless the body moved it away."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_atomic(path: str | os.PathLike, write: Any, *, binary: bool) -> Path:
    # The data is flushed to disk before the rename, so a crash cannot leave an empty file under the name.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_file_beside(path) as tmp:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to ``path`` through a temporary file and one rename; returns the path."""
    return _write_atomic(path, lambda f: f.write(text), binary=False)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Writes ``obj`` as indented JSON to ``path`` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def save_figure_atomic(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Saves a matplotlib figure as PNG to ``path`` atomically; returns the path."""
    return _write_atomic(path, lambda f: fig.savefig(f, format="png", **savefig_kwargs), binary=True)


def _exchange(a: Path, b: Path) -> bool:
    # Linux renameat2(RENAME_EXCHANGE) swaps two directories in one step; the standard library has no
    # wrapper, hence ctypes. False where the call or the flag is not available.
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if rename(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves the complete directory ``new`` to ``target``, replacing what is there as a whole.

    An existing ``target`` is swapped with ``new`` atomically (Linux ``renameat2``; elsewhere two renames,
    with a moment in which ``target`` does not exist) and the old content is then deleted.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new)  # now holds the old content
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / "content")
    os.rename(new, target)
    shutil.rmtree(old)
