"""Golden arrays of Co-Mixup from the authors' own code (snu-mllab/Co-Mixup), for tests/test_mix_comixup.py.

Runs THEIR ``mixup_process`` (``mixup.py`` / ``match.py``, read from a fetched copy of their repository, never
committed here) on small fixed inputs, saliency maps and random draws, and saves what it returns to
``tests/golden/comixup.npz``: the masks of every partition, the mixed images and the soft targets, with the
inputs and the draws. Their compatibility matrix is computed as in their ``main.py`` (the arg-max of the
saliency over an 8 x 8 sliding window, L1 distances by their ``utils.distance``).

Their code runs on CUDA and draws from two generators (torch's Dirichlet, NumPy's initial labeling); here,
patched at run time only: the device is the CPU, and both draws return values drawn beforehand from NumPy's
global generator in mixkit's order (per call ``rand()`` for ``prob``, then per partition the Dirichlet prior
and the initial labeling), which the npz stores, so mixkit seeded the same way draws the same.

    python benchmarks/golden_comixup.py --repo /work/.mirror/snu-mllab+Co-Mixup/repo

``load_authors(repo)`` and ``authors_mix(...)`` are also used by the live comparison in the tests.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from common import golden_parser, repo_commit, write_golden

# ruff: noqa: NPY002  (the draws come from NumPy's global generator, as mixkit's)

UPSTREAM = "snu-mllab/Co-Mixup"
DEFAULT_REPO = Path("/work/.mirror/snu-mllab+Co-Mixup/repo")
OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "comixup.npz"
AUTHORS_FILES = ("mixup.py", "match.py", "utils.py")
# The authors' main.py defaults (CIFAR-100, PreActResNet-18).
AUTHORS_DEFAULTS = dict(m_block_num=4, m_part=20, m_beta=0.32, m_gamma=1.0, m_thres=0.83, m_thres_type="hard",
                        m_eta=0.05, m_omega=0.001, mixup_alpha=2.0, set_resolve=True, m_niter=4)
# The cases (seeded 0, 1, 2): the defaults; small partitions (4 + 2) with the soft threshold on a fine grid;
# a strong compatibility term (where the hard threshold's reading of A matters). All three mix 2 to 5 inputs
# per output and use half-half labels.
CASES = {
    "defaults": {},
    "parts": dict(m_part=4, m_block_num=8, m_thres_type="soft"),
    "compat": dict(m_omega=0.9),
}
BATCH, CHANNELS, SIZE, CLASSES = 6, 1, 16, 4


def load_authors(repo: Path, workdir: Path) -> tuple[ModuleType, ModuleType, ModuleType]:
    """Their ``mixup``, ``match`` and ``utils`` modules, written out of the fetched bare repository into
    ``workdir`` and imported (they import ``gco``: gco-wrapper)."""
    for name in AUTHORS_FILES:
        text = subprocess.run(["git", f"--git-dir={repo}", "show", f"HEAD:{name}"], check=True,
                              capture_output=True, text=True).stdout
        (workdir / name).write_text(text)
    sys.path.insert(0, str(workdir))
    try:
        for name in ("mixup", "match", "utils"):
            sys.modules.pop(name, None)
        return tuple(importlib.import_module(name) for name in ("mixup", "match", "utils"))
    finally:
        sys.path.remove(str(workdir))


def draw_like_mixkit(batch_size: int, m_part: int, block_num: int, alpha: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The draws of one mixkit CoMixup call from NumPy's global generator (after its ``rand()`` for prob)."""
    np.random.rand()
    draws = []
    for start in range(0, batch_size, m_part):
        n = min(m_part, batch_size - start)
        draws.append((np.random.dirichlet(np.full(n, alpha)), np.random.randint(0, n, (n, block_num, block_num))))
    return draws


@contextlib.contextmanager
def replayed_draws(match: ModuleType, draws: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[None]:
    """Their Dirichlet sample and ``random_initialize`` return the given draws, partition after partition."""
    priors = [torch.tensor(p, dtype=torch.float32) for p, _ in draws]
    inits = [i for _, i in draws]

    class Replayed:
        def __init__(self, concentration: torch.Tensor) -> None:
            self.n = concentration.shape[0]

        def sample(self) -> torch.Tensor:
            prior = priors.pop(0)
            assert prior.shape == (self.n,)
            return prior

    def initialize(n_input: int, n_output: int, height: int, width: int) -> np.ndarray:
        init = inits.pop(0)
        assert init.shape == (n_output, width, height)
        return init

    saved = torch.distributions.dirichlet.Dirichlet, match.random_initialize
    torch.distributions.dirichlet.Dirichlet, match.random_initialize = Replayed, initialize
    try:
        yield
    finally:
        torch.distributions.dirichlet.Dirichlet, match.random_initialize = saved
    assert not priors and not inits, "their code drew fewer partitions than expected"


def authors_compatibility(utils: ModuleType, sc: torch.Tensor) -> torch.Tensor:
    """Their main.py: the most salient 8 x 8 window of each input, L1 distances between the windows."""
    z = F.avg_pool2d(sc, kernel_size=8, stride=1)
    peak = z.reshape(sc.shape[0], -1).argmax(1)
    position = torch.stack([peak // z.shape[-1], peak % z.shape[-1]], 1).float()
    return utils.distance(position, dist_type="l1")


def authors_mix(modules: tuple[ModuleType, ModuleType, ModuleType], x: torch.Tensor, y: torch.Tensor,
                sc: torch.Tensor, draws: list[tuple[np.ndarray, np.ndarray]], num_classes: int,
                **settings: object) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Their ``mixup_process`` on the CPU with the given draws: (mixed images, soft targets, masks per partition)."""
    mixup, match, utils = modules
    args = SimpleNamespace(**{**AUTHORS_DEFAULTS, **settings})
    masks: list[torch.Tensor] = []
    solve = match.get_onehot_matrix

    def on_cpu(*a, **kw):
        kw["device"] = "cpu"
        mask = solve(*a, **kw)
        masks.append(mask.clone())
        return mask

    target = F.one_hot(y, num_classes).float()  # their to_one_hot
    saved = mixup.get_onehot_matrix
    mixup.get_onehot_matrix = on_cpu
    try:
        with replayed_draws(match, draws):
            out, target = mixup.mixup_process(x, target, args=args, sc=sc, A_dist=authors_compatibility(utils, sc))
    finally:
        mixup.get_onehot_matrix = saved
    return out, target, masks


def golden_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Small fixed inputs: images, labels and a saliency map with one bright spot per image."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, CHANNELS, SIZE, SIZE)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    centres = rng.uniform(2, SIZE - 2, (BATCH, 2))
    spots = np.exp(-((rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2) / 8.0)
    sc = (spots + 0.2 * rng.random((BATCH, SIZE, SIZE))).astype(np.float32)
    return {"x": x, "y": y, "sc": sc}


def main(argv: list[str] | None = None) -> int:
    args = golden_parser(__doc__.split("\n\n")[0], repo=DEFAULT_REPO, out=OUT, upstream=UPSTREAM).parse_args(argv)
    torch.set_num_threads(1)
    arrays = golden_inputs()
    x, y, sc = (torch.from_numpy(arrays[k]) for k in ("x", "y", "sc"))
    commit = repo_commit(args.repo)
    with tempfile.TemporaryDirectory() as tmp:
        modules = load_authors(args.repo, Path(tmp))
        for seed, (case, settings) in enumerate(CASES.items()):
            full = {**AUTHORS_DEFAULTS, **settings}
            np.random.seed(seed)
            draws = draw_like_mixkit(BATCH, full["m_part"], full["m_block_num"], full["mixup_alpha"])
            out, target, masks = authors_mix(modules, x, y, sc, draws, CLASSES, **settings)
            arrays[f"{case}/seed"] = np.array(seed)
            for k, (prior, init) in enumerate(draws):
                arrays[f"{case}/prior{k}"] = prior
                arrays[f"{case}/init{k}"] = init.astype(np.int8)
                arrays[f"{case}/mask{k}"] = masks[k].numpy().astype(np.float16)  # 0, 0.5 or 1: exact
            arrays[f"{case}/target"] = target.numpy()
            if case == "defaults":
                arrays[f"{case}/out"] = out.numpy()
            else:  # the mixing arithmetic is checked once; elsewhere a checksum keeps the file small
                arrays[f"{case}/out_sum"] = out.double().sum((1, 2, 3)).numpy()
    arrays["settings"] = np.array(repr({case: {**AUTHORS_DEFAULTS, **s} for case, s in CASES.items()}))
    write_golden(args.out, arrays, upstream=UPSTREAM, commit=commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
