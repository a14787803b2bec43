"""The loader contract for every backend on CPU: shapes, dtypes, labels, coverage, reshuffles, shards."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from data_fixtures import identify, make_colour_folder, run_epoch
from data_photos import build_photo_folder

from mixkit.data import create_loader, scan_image_folder, shard_indices

# numba's finaliser raises a harmless KeyError at garbage collection after ffcv's compiled pipelines.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

BACKENDS = ["torch", "ffcv", "dali", "dali-wds"]
PER_CLASS = (7, 8, 8)  # 23 samples: an odd count, so shards and last batches are uneven
N = sum(PER_CLASS)
BS = 5


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    return make_colour_folder(tmp_path_factory.mktemp("colour"), PER_CLASS)


@pytest.fixture(scope="module")
def sources(colour, tmp_path_factory):
    """Data source of each backend, built lazily from the colour folder."""
    cache = {}

    def get(backend: str):
        if backend not in cache:
            if backend == "ffcv":
                pytest.importorskip("ffcv")
                from mixkit.data import write_beton
                out = tmp_path_factory.mktemp("beton") / "colour.beton"
                write_beton(colour.root, out, num_workers=1, write_mode="jpg", jpeg_quality=95)
                cache[backend] = out
            elif backend == "dali-wds":
                pytest.importorskip("nvidia.dali")
                from mixkit.data import write_webdataset
                out = tmp_path_factory.mktemp("wds")
                write_webdataset(colour.root, out, shard_size=10)
                cache[backend] = out
            else:
                if backend == "dali":
                    pytest.importorskip("nvidia.dali")
                cache[backend] = colour.root
        return cache[backend]

    return get


def make(sources, backend: str, **kwargs):
    kwargs.setdefault("batch_size", BS)
    kwargs.setdefault("img_size", 32)
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("num_workers", 0 if backend == "torch" else 2)
    return create_loader(backend.split("-")[0], sources(backend), **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_epoch_sees_every_sample_once_with_its_label(backend, sources, colour):
    loader = make(sources, backend, is_training=False)
    assert len(loader) == -(-N // BS)
    ids, labels, meta = run_epoch(loader)
    assert Counter(ids) == Counter(colour.colour_of.values())  # every file exactly once
    assert labels == [colour.class_of_colour[i] for i in ids]
    assert len(meta) == len(loader)
    assert [m[0][0] for m in meta] == [BS] * (N // BS) + [N % BS]  # the partial last batch is kept
    for shape, dtype, ydtype, yshape, device in meta:
        assert shape[1:] == (3, 32, 32) and dtype == torch.float32 and ydtype == torch.int64
        assert yshape == (shape[0],) and device == torch.device("cpu")
    assert loader.classes == colour.classes


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_epochs_drop_last_and_reshuffle(backend, channels_last, sources, colour):
    loader = make(sources, backend, is_training=True, channels_last=channels_last, seed=3)
    assert len(loader) == N // BS
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    orders = []
    for _ in range(2):
        seen = []
        for images, labels in loader:
            assert images.shape == (BS, 3, 32, 32) and images.dtype == torch.float32
            assert labels.dtype == torch.int64 and labels.shape == (BS,)
            assert images.is_contiguous(memory_format=fmt)
            ids = identify(images)
            assert labels.tolist() == [colour.class_of_colour[i] for i in ids]
            seen.extend(ids)
        assert len(seen) == (N // BS) * BS and len(set(seen)) == len(seen)  # no repeats, no padding
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled
    if not backend.startswith("dali"):  # DALI's reader owns its shuffle state
        loader.set_epoch(0)
        assert run_epoch(loader)[0] == orders[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ranks_read_disjoint_shards(backend, sources, colour):
    ranks = [make(sources, backend, is_training=False, rank=r, world_size=2) for r in range(2)]
    shards = [run_epoch(loader)[0] for loader in ranks]
    assert not set(shards[0]) & set(shards[1])
    assert Counter(shards[0] + shards[1]) == Counter(colour.colour_of.values())  # exactly once overall
    assert sum(loader.shard_size for loader in ranks) == N

    train = [make(sources, backend, is_training=True, rank=r, world_size=2, seed=1) for r in range(2)]
    assert len(train[0]) == len(train[1])  # DDP needs the same number of batches on every rank
    seen = [run_epoch(loader)[0] for loader in train]
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) == len(seen[1]) == len(train[0]) * BS


def test_torch_worker_processes(sources, colour):
    loader = make(sources, "torch", is_training=False, num_workers=2)
    ids, labels, _ = run_epoch(loader)
    assert sorted(ids) == sorted(colour.colour_of.values())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "ffcv", "dali"])
def test_real_photos_in_order(backend, tmp_path_factory):
    """Real JPEG photos: the evaluation order is the ImageFolder's, so labels match the files read."""
    root = build_photo_folder(tmp_path_factory.mktemp("photos"), num_files=30, min_size=64, max_size=120)
    index = scan_image_folder(root)
    source = root
    if backend == "ffcv":
        pytest.importorskip("ffcv")
        from mixkit.data import write_beton
        source = write_beton(root, root.parent / "photos.beton", num_workers=1).paths[0]
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    loader = create_loader(backend, source, batch_size=8, is_training=False, img_size=48, device="cpu",
                           num_workers=2 if backend != "torch" else 0)
    labels, count = [], 0
    for images, y in loader:
        assert images.shape[1:] == (3, 48, 48) and torch.isfinite(images).all()
        assert images.std() > 0.1  # real content, not a constant
        labels.extend(y.tolist())
        count += len(y)
    assert labels == [y for _, y in index.samples]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (GPU decode paths)")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_output(backend, sources, colour):
    loader = make(sources, backend, is_training=False, device="cuda")
    ids, labels, meta = run_epoch(loader)
    assert Counter(ids) == Counter(colour.colour_of.values())
    assert all(m[4].type == "cuda" for m in meta)


@pytest.mark.parametrize("backend", ["torch", "ffcv", "dali"])
def test_backends_share_one_partition(backend, sources, colour):
    """Training shards hold mixkit's seeded partition: the same samples for torch and ffcv. DALI's file
    reader with random_shuffle permutes the list again with its own fixed seed before cutting shards, so
    its shards differ, but they are disjoint, of equal size, and hold exactly the samples kept."""
    seen, expected = [], []
    for rank in range(2):
        loader = make(sources, backend, is_training=True, drop_last=False, rank=rank, world_size=2, seed=7)
        shard = shard_indices(N, rank=rank, world_size=2, seed=7, equal_size=True)
        expected.append(sorted(colour.colour_of[colour.files[i]] for i in shard))
        seen.append(sorted(run_epoch(loader)[0]))
    if backend == "dali":
        assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1])
        assert sorted(seen[0] + seen[1]) == sorted(expected[0] + expected[1])
    else:
        assert seen == expected


def test_ffcv_copy_keeps_batches(sources):
    """copy=True batches stay valid after later batches; by default images are views into ffcv's ring."""
    pytest.importorskip("ffcv")
    loader = make(sources, "ffcv", is_training=False, batch_size=2, copy=True, batches_ahead=1)
    batches = [(images, labels) for images, labels in loader]
    ids = [identify(images) for images, _ in batches]
    assert len({i for b in ids for i in b}) == N  # nothing overwritten: every sample still distinct
    loader = make(sources, "ffcv", is_training=False, batch_size=2, batches_ahead=1)
    kept = [labels for _, labels in loader]  # labels are always copied, even without copy=True
    assert [b.tolist() for b in kept] == [labels.tolist() for _, labels in batches]
