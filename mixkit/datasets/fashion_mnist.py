"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (IDX gz files, read offline).

torchvision's FashionMNIST downloads on first use; this reader only reads the files the
system package installs, so tests and benchmarks never touch the network.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

DEFAULT_FASHION_MNIST_ROOT = Path(os.environ.get("MIXKIT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Args:
        path: File to read.

    Returns:
        The array with the shape stored in the file header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = data[4 + 4 * ndim :]
    if len(payload) != expected:
        raise ValueError(f"{path} is truncated: header says {expected} bytes of data, file has {len(payload)}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


_IDX_CODES = {np.dtype(v).str.lstrip("|"): k for k, v in _IDX_DTYPES.items()}


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an array as an IDX file, gzip-compressed when ``path`` ends in ``.gz`` (the inverse of ``read_idx``).

    Written atomically (a temporary file beside ``path``, then a rename), so a reader never sees half a file.

    Args:
        path: File to write.
        array: uint8, int8, big-endian int16/int32/float32/float64 data (native-endian numbers are converted).

    Returns:
        The path written.
    """
    from ..atomic import write_bytes_atomic

    path = Path(path)
    array = np.asarray(array)
    if array.dtype.kind in "iuf" and array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder(">"))
    code = _IDX_CODES.get(array.dtype.str.lstrip("|"))
    if code is None or array.ndim < 1 or array.ndim > 255:
        raise ValueError(f"IDX holds 1-255 dimensional uint8, int8, int16, int32, float32 or float64 arrays; got "
                         f"{array.dtype} with {array.ndim} dimensions")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array).tobytes()
    write_bytes_atomic(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


class FashionMNIST(Dataset):
    """Fashion-MNIST as uint8 images (N, 28, 28) and int64 labels, read from IDX files.

    Args:
        root: Folder with the four ``*-idx?-ubyte.gz`` files.
        train: The 60k training split, else the 10k test split.
    """

    classes = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )

    def __init__(self, *, root: str | os.PathLike = DEFAULT_FASHION_MNIST_ROOT, train: bool = True) -> None:
        root = Path(root)
        split = "train" if train else "t10k"
        images, labels = root / f"{split}-images-idx3-ubyte.gz", root / f"{split}-labels-idx1-ubyte.gz"
        for f in (images, labels):
            if not f.is_file():
                raise FileNotFoundError(
                    f"Fashion-MNIST file {f} not found. Install Debian's package "
                    "(apt-get install dataset-fashion-mnist) or set MIXKIT_FASHION_MNIST to the folder."
                )
        self.images = torch.from_numpy(read_idx(images).copy())
        self.labels = torch.from_numpy(read_idx(labels).astype(np.int64))
        if len(self.images) != len(self.labels):
            raise ValueError(f"{images} has {len(self.images)} images but {labels} has {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]
