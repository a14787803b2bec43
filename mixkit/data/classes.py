"""Labels by class name: timm's ``class_map`` idea, for every loader backend.

A label is an index into a loader's ``classes``. A split read on its own numbers its classes by its own
sorted folder names (or the class list of its .beton sidecar / webdataset index), so an evaluation split
that lacks one of the training classes would shift every later label and report a wrong accuracy without
a word. ``LoaderConfig.class_map`` (the training classes, in label order) makes a loader give each sample
the label of its class *name* in that list; a class the map does not hold is an error naming it, never a
label out of range. ``source_classes`` reads a source's class names without building a loader (for
``mixkit-train`` to size the classifier before the loader exists).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["as_class_map", "label_map", "source_classes"]

_SHOWN = 8


def as_class_map(value: Sequence[str] | Mapping[str, int]) -> tuple[str, ...]:
    """The class names in label order, from a sequence of names (label = position) or a mapping of names
    to labels (timm's ``class_map`` dict; its labels must be 0..n-1, each once).

    Raises:
        TypeError: Not a sequence of strings or a mapping of strings to ints.
        ValueError: An empty map, a name given twice, or mapping labels that are not 0..n-1.
    """
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value.values()):
            raise TypeError(f"class_map as a mapping takes class names to int labels, got {dict(value)!r:.200}.")
        if sorted(int(v) for v in value.values()) != list(range(len(value))):
            raise ValueError(f"class_map's labels must be 0..{len(value) - 1}, each once, got "
                             f"{sorted(value.values())!r:.200}.")
        names = tuple(sorted(value, key=lambda k: int(value[k])))
    elif isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(
            isinstance(v, str) for v in value):
        raise TypeError(f"class_map must be a sequence of class names (label = position) or a mapping of "
                        f"names to labels, got {type(value).__name__} {value!r:.200}.")
    else:
        names = tuple(value)
    if not names:
        raise ValueError("class_map is empty: pass the training classes in label order.")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"class_map names {twice[:_SHOWN]} more than once: each class has one label.")
    return names


def _preview(names: Sequence[str]) -> str:
    shown = ", ".join(map(repr, names[:_SHOWN]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def label_map(classes: Sequence[str], class_map: Sequence[str], *, source: str) -> np.ndarray | None:
    """The label in ``class_map`` of each of a source's own labels (``classes[i]`` -> its index in
    ``class_map``), or None when the two agree already.

    Args:
        classes: The source's classes, in its own label order.
        class_map: The classes to label by (the training classes).
        source: What is being read, for the error (the split's folder or file).

    Raises:
        ValueError: A class of the source is not in ``class_map``; the message names it and ``source``.
    """
    index = {name: i for i, name in enumerate(class_map)}
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise ValueError(f"{source}: class(es) {_preview(unknown)} are not among the {len(class_map)} classes it "
                         f"is labelled by (the training classes: {_preview(list(class_map))}). An evaluation split "
                         "may lack training classes but cannot add new ones, whose labels the model never "
                         "learnt: remove those classes from it, or train with them.")
    mapped = np.array([index[c] for c in classes], dtype=np.int64)
    return None if np.array_equal(mapped, np.arange(len(classes))) else mapped  # already the same labels


def source_classes(source: str | os.PathLike) -> list[str] | None:
    """The class names of a loader source in label order, read without decoding anything: an ImageFolder's
    sorted class folders, a .beton's sidecar, a webdataset directory's index; None when the source does
    not name its classes (a .beton written by other tools, tar shards without an index).

    Raises:
        ValueError: An unreadable sidecar or index.
    """
    from .beton import read_sidecar
    from .wds_index import find_tar_shards, read_wds_index

    path = Path(source)
    if path.suffix == ".beton":
        meta = read_sidecar(path) if path.is_file() else None
        return list(meta["classes"]) if meta and meta.get("classes") else None
    tars = find_tar_shards(path) if path.exists() else None
    if tars is not None:
        listed = read_wds_index(tars[0].parent)
        meta = listed[1] if listed is not None else {}
        return list(meta["classes"]) if meta.get("classes") else None
    if not path.is_dir():
        return None
    names = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    return names or None
