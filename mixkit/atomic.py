"""Writing outputs so that a reader sees the old output or the complete new one, never a partial one.

One place for every atomic write of the package: converted datasets, run files, weights, reports and
figures.

Files and directories are written under a hidden temporary name beside the target (same file system)
and moved into place with one rename once complete. A process killed before that leaves the target
untouched, and a ``.<name>.tmp-<host>-<pid>-*`` entry behind that no reader looks at; the next write of
the same target on that host removes the entries of writers that no longer run (with a warning), so a
killed conversion does not keep gigabytes of temporaries.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "remove_stale_temporaries",
    "replace_dir",
    "save_figure_atomic",
    "temp_dir_beside",
    "temp_file_beside",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


def _host_prefix(target: Path) -> str:
    return f".{target.name}.tmp-{socket.gethostname()}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Removes the temporaries beside ``target`` left by writers on this host that no longer run.

    Only entries named by this module for this host are considered, and only when their process is gone
    (a live writer's, or another host's on a shared file system, are left alone). Returns what was removed.
    """
    target = Path(target)
    prefix = _host_prefix(target)
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in target.parent.iterdir():
            pid = entry.name[len(prefix):].split("-", 1)[0] if entry.name.startswith(prefix) else ""
            if not pid.isdigit() or _running(int(pid)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
    if removed:
        warnings.warn(f"removed {len(removed)} temporary entr{'y' if len(removed) == 1 else 'ies'} beside {target} "
                      f"left by a killed writer: {', '.join(sorted(p.name for p in removed))}", RuntimeWarning,
                      stacklevel=4)
    return removed


@contextlib.contextmanager
def temp_file_beside(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target``, removed unless the body moved it away."""
    target = Path(target)
    remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=f"{_host_prefix(target)}{os.getpid()}-", dir=target.parent)
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
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_host_prefix(target)}{os.getpid()}-", dir=target.parent))
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` through a temporary file and one rename; returns the path."""
    return _write_atomic(path, lambda f: f.write(data), binary=True)


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
