"""Golden arrays of PuzzleMix from the authors' own code (snu-mllab/PuzzleMix), for tests/test_mix_puzzlemix.py.

Runs THEIR ``mixup_process`` (``mixup.py``, read from a fetched copy of their repository, never committed here)
on small fixed inputs, input gradients and random draws, and saves what it returns to
``tests/golden/puzzlemix.npz``: the masks of every pair (their ``graphcut_multi``), the mixed images and the
soft targets, with the inputs and the draws. Their saliency is computed from the gradient as in their
``main.py`` (the root mean square over channels), and so is the adversarial perturbation (``main.py``'s
random start, signed-gradient step, clipping and uniform scale, restated here as the driver of their
``mixup_process``, which takes the perturbation as its ``noise`` argument).

Their code runs on CUDA and draws from NumPy's global generator in its own order; here, patched at run time
only: the device is the CPU, and their draws (the grid, the permutation, lam) return values drawn beforehand
from NumPy's global generator in mixkit's order (``rand()`` for prob, Beta lam, the grid, the permutation
with ``pairing='random'``, the two perturbation choices, the scale and the random start's seed), which the npz
stores, so mixkit seeded the same way draws the same.

    python benchmarks/golden_puzzlemix.py --repo /work/.mirror/snu-mllab+PuzzleMix/repo

``load_authors(repo)``, ``draw_like_mixkit(...)`` and ``authors_mix(...)`` are also used by the live
comparison in the tests.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from common import golden_parser, repo_commit, write_golden

# ruff: noqa: NPY002  (the draws come from NumPy's global generator, as mixkit's)

UPSTREAM = "snu-mllab/PuzzleMix"
DEFAULT_REPO = Path("/work/.mirror/snu-mllab+PuzzleMix/repo")
OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "puzzlemix.npz"
GRID_CHOICES = (2, 4, 8, 16)  # their 2 ** randint(1, 5)
SEED_RANGE = 2 ** 31
# The authors' main.py defaults (CIFAR-100, PreActResNet-18), in mixkit's names.
AUTHORS_DEFAULTS = dict(mixup_alpha=1.0, block_num=-1, n_labels=3, beta=1.2, gamma=0.5, eta=0.2, neigh_size=4,
                        transport=True, t_eps=0.8, t_size=-1, adv_p=0.0, adv_eps=10.0, pairing="flip",
                        mean=None, std=None)
# The cases, one seed each (chosen for a lam inside (0.3, 0.7) and, when random, no sample paired with
# itself): the defaults (the grid drawn: 8, and 16 blocks of one pixel); two labels and a transport finer than the grid
# (their README's t_size=4 setting, here on 16 px images: 2 px cells); the authors' random pairing with
# normalised inputs and a strong data term; the adversarial perturbation of both inputs.
CASES = {
    "defaults": {},
    "pixels": {},
    "fine": dict(block_num=4, n_labels=2, t_size=2),
    "random": dict(block_num=8, pairing="random", gamma=2.0, neigh_size=2, mean=(0.5, 0.4, 0.3),
                   std=(0.25, 0.2, 0.3)),
    "adversarial": dict(block_num=4, adv_p=1.0),
}
SEEDS = {"defaults": 22, "pixels": 5, "fine": 24, "random": 25, "adversarial": 8}
BATCH, CHANNELS, SIZE, CLASSES = 6, 3, 16, 5  # their transport_image assumes 3 channels


def load_authors(repo: Path, workdir: Path) -> ModuleType:
    """Their ``mixup`` module, written out of the fetched bare repository into ``workdir`` and imported (it
    imports ``gco``: gco-wrapper)."""
    text = subprocess.run(["git", f"--git-dir={repo}", "show", "HEAD:mixup.py"], check=True, capture_output=True,
                          text=True).stdout
    (workdir / "mixup.py").write_text(text)
    sys.path.insert(0, str(workdir))
    try:
        sys.modules.pop("mixup", None)
        return importlib.import_module("mixup")
    finally:
        sys.path.remove(str(workdir))


def draw_like_mixkit(batch_size: int, settings: dict, size: int = SIZE) -> dict:
    """The draws of one mixkit PuzzleMix call from NumPy's global generator (its order; always mixing)."""
    from mixkit.mix.puzzlemix_solver import fitting_grids

    np.random.rand()  # prob
    lam = float(np.random.beta(settings["mixup_alpha"], settings["mixup_alpha"]))
    block_num = settings["block_num"]
    if block_num == -1:
        t_size = settings["t_size"] if settings["transport"] else -1
        grids = fitting_grids(size, GRID_CHOICES, settings["neigh_size"], t_size)
        block_num = grids[int(np.random.randint(len(grids)))]
    if settings["pairing"] == "random":
        partner = np.random.permutation(batch_size)
    else:
        partner = np.arange(batch_size)[::-1].copy()
    adversarial, scale, seed = (False, False), 0.0, 0
    if settings["adv_p"] > 0:
        adversarial = (bool(np.random.rand() < settings["adv_p"]), bool(np.random.rand() < settings["adv_p"]))
        if any(adversarial):
            scale, seed = float(np.random.rand()), int(np.random.randint(SEED_RANGE))
    return dict(lam=lam, block_num=block_num, partner=partner, adversarial=adversarial, scale=scale, seed=seed)


class _ReplayedRandom:
    """Their ``np.random`` calls in ``mixup_process`` answered with the given draws."""

    def __init__(self, draws: dict) -> None:
        self.draws = draws

    def randint(self, low: int, high: int) -> int:
        assert (low, high) == (1, 5)
        return int(np.log2(self.draws["block_num"]))

    def permutation(self, n: int) -> np.ndarray:
        assert n == len(self.draws["partner"])
        return self.draws["partner"].copy()

    def beta(self, a: float, b: float) -> float:
        return self.draws["lam"]


class _NumpyWithReplayedRandom:
    def __init__(self, draws: dict) -> None:
        self.random = _ReplayedRandom(draws)

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)


@contextmanager
def _patched(mixup: ModuleType, draws: dict, masks: list[np.ndarray]) -> Iterator[None]:
    """CPU instead of CUDA, the replayed draws, and their graph cuts' masks recorded."""
    saved = mixup.np, mixup.mixup_graph, mixup.graphcut_multi
    graph, cut = mixup.mixup_graph, mixup.graphcut_multi

    def on_cpu(*args, **kwargs):
        kwargs["device"] = "cpu"
        return graph(*args, **kwargs)

    def recorded(*args, **kwargs):
        mask = cut(*args, **kwargs)
        masks.append(np.asarray(mask))
        return mask

    mixup.np, mixup.mixup_graph, mixup.graphcut_multi = _NumpyWithReplayedRandom(draws), on_cpu, recorded
    try:
        yield
    finally:
        mixup.np, mixup.mixup_graph, mixup.graphcut_multi = saved


def _normalisation(settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
    if settings["mean"] is None:  # inputs taken as pixels: x * 1 + 0 is x
        return torch.zeros(1, CHANNELS, 1, 1), torch.ones(1, CHANNELS, 1, 1)
    return (torch.tensor(settings["mean"]).reshape(1, -1, 1, 1), torch.tensor(settings["std"]).reshape(1, -1, 1, 1))


def authors_perturbation(x: torch.Tensor, grad_at: object, draws: dict, settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Their main.py's adversarial step (restated as the driver): the random start (here from the drawn seed),
    the input gradient at the perturbed batch (``grad_at(x_perturbed)``), the signed step, the clip and the
    scale. Returns (the perturbation, the gradient it used)."""
    mean, std = _normalisation(settings)
    eps = settings["adv_eps"]
    generator = torch.Generator().manual_seed(draws["seed"])
    noise = torch.zeros_like(x).uniform_(-eps / 255.0, eps / 255.0, generator=generator)
    original = x * std + mean
    perturbed = torch.clamp(original + noise, 0, 1)
    noise = perturbed - original
    grad = grad_at((perturbed - mean) / std)
    noise = noise + (eps + 2) / 255.0 * grad.sign()
    noise = torch.clamp(noise, -eps / 255.0, eps / 255.0)
    return draws["scale"] * noise, grad


def authors_mix(mixup: ModuleType, x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, draws: dict,
                num_classes: int, settings: dict,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Their ``mixup_process`` on the CPU with the given draws: (mixed images, soft targets, masks)."""
    mean, std = _normalisation(settings)
    args = SimpleNamespace(mixup_alpha=settings["mixup_alpha"], in_batch=False, mean=mean, std=std, box=False,
                           graph=True, beta=settings["beta"], gamma=settings["gamma"], eta=settings["eta"],
                           neigh_size=settings["neigh_size"], n_labels=settings["n_labels"],
                           transport=settings["transport"], t_eps=settings["t_eps"], t_size=settings["t_size"])
    unary = torch.sqrt(torch.mean(grad ** 2, dim=1))  # their main.py's saliency
    target = F.one_hot(y, num_classes).float()  # their to_one_hot
    masks: list[np.ndarray] = []
    adv1, adv2 = (int(a) for a in draws["adversarial"])
    with _patched(mixup, draws, masks):
        out, target = mixup.mixup_process(x.clone(), target, args=args, grad=unary, noise=noise, adv_mask1=adv1,
                                          adv_mask2=adv2)
    return out, target, np.stack(masks)


def golden_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Small fixed inputs: smooth pixel images in [0, 1], labels, and an input gradient with one salient spot
    per image."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE] / SIZE
    phase = rng.uniform(0, 2 * np.pi, (BATCH, CHANNELS, 1, 1))
    x = 0.5 + 0.3 * np.sin(3 * rows + phase) * np.cos(2 * cols - phase) + 0.1 * rng.random((BATCH, CHANNELS, SIZE, SIZE))
    y = rng.integers(0, CLASSES, BATCH)
    centres = rng.uniform(2, SIZE - 2, (BATCH, 2))
    spot = np.exp(-((rows * SIZE - centres[:, :1, None]) ** 2 + (cols * SIZE - centres[:, 1:, None]) ** 2) / 6.0)
    grad = rng.standard_normal((BATCH, CHANNELS, SIZE, SIZE)) * (0.05 + spot[:, None])
    return {"x": x.astype(np.float32), "y": y, "grad": grad.astype(np.float32)}


def case_input(x: torch.Tensor, settings: dict) -> torch.Tensor:
    """The case's model input: the pixels normalised by the case's mean/std (if any)."""
    mean, std = _normalisation(settings)
    return (x - mean) / std if settings["mean"] is not None else x


def main(argv: list[str] | None = None) -> int:
    args = golden_parser(__doc__.split("\n\n")[0], repo=DEFAULT_REPO, out=OUT, upstream=UPSTREAM).parse_args(argv)
    torch.set_num_threads(1)
    arrays = golden_inputs()
    pixels, y, grad = (torch.from_numpy(arrays[k]) for k in ("x", "y", "grad"))
    commit = repo_commit(args.repo)
    with tempfile.TemporaryDirectory() as tmp:
        mixup = load_authors(args.repo, Path(tmp))
        for case, overrides in CASES.items():
            settings = {**AUTHORS_DEFAULTS, **overrides}
            np.random.seed(SEEDS[case])
            draws = draw_like_mixkit(BATCH, settings)
            partner = draws["partner"]
            assert not np.any(partner == np.arange(BATCH)), "a golden case must pair no sample with itself"
            x = case_input(pixels, settings)
            noise, used = None, grad
            if any(draws["adversarial"]):
                # The gradient at the perturbed batch: the fixed one (the model is not part of this check).
                noise, used = authors_perturbation(x, lambda _: grad, draws, settings)
            out, target, masks = authors_mix(mixup, x, y, used, draws, CLASSES, settings, noise=noise)
            arrays[f"{case}/seed"] = np.array(SEEDS[case])
            arrays[f"{case}/lam"] = np.array(draws["lam"])
            arrays[f"{case}/block_num"] = np.array(draws["block_num"])
            arrays[f"{case}/partner"] = partner
            arrays[f"{case}/mask"] = masks.astype(np.float16)  # levels i / (n_labels - 1): exact
            arrays[f"{case}/out"] = out.numpy()
            arrays[f"{case}/target"] = target.numpy()
            print(f"{case}: grid {draws['block_num']}, lam {draws['lam']:.3f}, mask means "
                  f"{np.round(masks.reshape(BATCH, -1).mean(1), 3).tolist()}")
    arrays["settings"] = np.array(repr({case: {**AUTHORS_DEFAULTS, **s} for case, s in CASES.items()}))
    write_golden(args.out, arrays, upstream=UPSTREAM, commit=commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
