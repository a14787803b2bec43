"""The webdataset shards of a ``mixkit convert --format wds`` directory and their ``<prefix>.json`` index.

Separate from the 'dali' backend (which imports DALI) so that mixkit-train and mixkit-eval can read a
directory's class names and sample count without DALI installed.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FIX_WDS", "find_tar_shards", "read_wds_index"]

FIX_WDS = "write them with `mixkit convert IMAGEFOLDER OUT_DIR --format wds`"


def read_wds_index(directory: Path) -> tuple[list[Path], dict] | None:
    """The shards and metadata of the ``<prefix>.json`` index in ``directory``, or None without one.

    Raises:
        ValueError: An index that is not JSON, or several indexes in one directory.
    """
    indexes = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            meta = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"webdataset index {str(path)!r} is not valid JSON ({e}): {FIX_WDS} "
                             "--overwrite.") from e
        if isinstance(meta, dict) and "shards" in meta:
            indexes.append((path, meta))
    if not indexes:
        return None
    if len(indexes) > 1:
        raise ValueError(f"directory {str(directory)!r} holds {len(indexes)} webdataset indexes "
                         f"{[p.name for p, _ in indexes]}: one directory holds one conversion; convert again "
                         "with --overwrite, or pass the shards as a list.")
    return [Path(directory) / name for name in indexes[0][1]["shards"]], indexes[0][1]


def find_tar_shards(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path] | None:
    """The webdataset shards named by ``source``, or None when ``source`` is an ImageFolder.

    ``source`` is a .tar, a list of them, or a directory: one written by ``mixkit convert --format wds``
    gives exactly the shards its ``<prefix>.json`` index lists (other .tar files there are not read); a
    directory without an index gives its .tar files when it holds nothing else.

    Raises:
        FileNotFoundError: A named or listed .tar is missing.
        ValueError: A directory with several indexes, or an unreadable one.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            listed = read_wds_index(path)
            if listed is not None:
                paths = listed[0]
            else:
                tars = sorted(path.glob("*.tar"))
                others = [p for p in path.iterdir() if p.suffix not in (".tar", ".json", ".idx")]
                return tars if tars and not others else None
        elif path.suffix != ".tar":
            return None
        else:
            paths = [path]
    else:
        paths = [Path(p) for p in source]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"webdataset shards {missing} do not exist: {FIX_WDS}.")
    return paths
