"""Golden arrays of SaliencyMix from the authors' own code (afm-shahab-uddin/SaliencyMix), for
tests/test_mix_saliencymix.py.

Runs THEIR ``saliency_bbox`` and the mixing step of their training loop (``SaliencyMix_CIFAR/saliencymix.py``,
read from a fetched copy of their repository at run time, never committed here) on small fixed inputs and
draws, and saves what they give to ``tests/golden/saliencymix.npz``: the draws (their ``r``, ``lam`` and
permutation), the OpenCV saliency map their code computed (quantised to uint8 as theirs), the box, the mixed
images, the area-corrected lam and the soft targets their loss implies (``lam * y + (1 - lam) * y[perm]``).

Their file is a training script (it parses arguments and downloads CIFAR at import), so it is not imported:
its ``saliency_bbox`` function and the mixing statements of its loop (``r = np.random.rand(1)`` and the body of
``if args.beta > 0 and r < args.salmix_prob:`` up to the lam correction) are taken out of its syntax tree and
run as they are. Patched at run time only: NumPy 2 has no ``np.int`` (restored as ``int`` while their code runs),
the device is the CPU (their ``.cuda()`` is a no-op), and their ``torch.randperm`` returns
``np.random.permutation`` of NumPy's global generator, so their draws (``rand``, ``beta``, permutation) come in
the order of mixkit's with ``mode='batch', pairing='random'``, and mixkit seeded the same way draws the same.
Their ``cv2`` is OpenCV's (opencv-contrib: ``cv2.saliency``), with each map recorded; a test without
opencv-contrib may give their code a detector of its own (``authors_mix(..., detector=...)``).

    /tmp/cvenv/bin/python benchmarks/golden_saliencymix.py --repo /work/.mirror/afm-shahab-uddin+SaliencyMix/repo

(a Python whose cv2 has ``saliency``: opencv-contrib-python-headless, installed in a separate venv, not over
ffcv's opencv-python). ``load_authors(repo)`` and ``authors_mix(...)`` are also used by the live comparison in
the tests.
"""

from __future__ import annotations

import ast
import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, SimpleNamespace
from typing import Any

import numpy as np
import torch
from common import golden_parser, repo_commit, write_golden

# ruff: noqa: NPY002  (the draws come from NumPy's global generator, as mixkit's)

UPSTREAM = "afm-shahab-uddin/SaliencyMix"
DEFAULT_REPO = Path("/work/.mirror/afm-shahab-uddin+SaliencyMix/repo")
AUTHORS_FILE = "SaliencyMix_CIFAR/saliencymix.py"
OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "saliencymix.npz"
MIX_TEST = "args.beta > 0 and r < args.salmix_prob"  # the `if` of their loop that mixes
# The authors' command.sh (CIFAR-10/100, every model): --beta 1.0 --salmix_prob 0.5.
AUTHORS_DEFAULTS = dict(beta=1.0, salmix_prob=0.5)
# Their CIFAR normalisation (transforms.Normalize in saliencymix.py), applied to uint8 images as ToTensor does.
MEAN = np.array([125.3, 123.0, 113.9]) / 255.0
STD = np.array([63.0, 62.1, 66.7]) / 255.0
# An odd batch of non-square images (their rows are `bbx`, their columns `bby`: the axes are checked).
BATCH, HEIGHT, WIDTH, CLASSES = 5, 12, 16, 4
# The cases: the seed of NumPy's global generator before the call, and their beta where it is not theirs. The
# seeds are picked (from their draws on these inputs) to cover boxes clipped at an edge, a box inside the image,
# maps with two maxima, a drawn lam so close to 1 that their box is empty (lam stays 1), and a batch their `if`
# leaves unmixed.
CASES = {
    "clipped": dict(seed=2),
    "ties": dict(seed=11),
    "wide": dict(seed=7),
    "inside": dict(seed=12, beta=0.4),
    "empty": dict(seed=12),
    "unmixed": dict(seed=0),
}


@dataclass(frozen=True)
class AuthorsCode:
    """Their ``saliency_bbox`` and loop statements, compiled from their file (``code``), and its commit."""

    code: CodeType
    commit: str


def load_authors(repo: Path) -> AuthorsCode:
    """Their ``saliency_bbox`` and the mixing statements of their training loop, from the fetched bare repository.

    Raises:
        LookupError: The file no longer has the function or the statements (another version of their code).
    """
    text = subprocess.run(["git", f"--git-dir={repo}", "show", f"HEAD:{AUTHORS_FILE}"], check=True,
                          capture_output=True, text=True).stdout
    commit = repo_commit(repo)
    tree = ast.parse(text)
    bbox = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "saliency_bbox"]
    draw = mix = None
    for node in ast.walk(tree):
        for i, statement in enumerate(getattr(node, "body", [])):
            if isinstance(statement, ast.If) and ast.unparse(statement.test) == MIX_TEST:
                draw, mix = node.body[i - 1], statement
    if not bbox or draw is None or ast.unparse(draw) != "r = np.random.rand(1)":
        raise LookupError(f"{AUTHORS_FILE}@{commit[:12]} has no saliency_bbox or no `if {MIX_TEST}:` after its draw")
    # The mixing statements end with the lam correction; the forward and the loss that follow are the model's.
    body = []
    for statement in mix.body:
        body.append(statement)
        if ast.unparse(statement).startswith("lam = 1 -"):
            break
    else:
        raise LookupError(f"{AUTHORS_FILE}@{commit[:12]}: no lam correction in `if {MIX_TEST}:`")
    module = ast.Module(body=[bbox[0], draw, ast.If(test=mix.test, body=body, orelse=[])], type_ignores=[])
    return AuthorsCode(code=compile(ast.fix_missing_locations(module), f"{repo}:{AUTHORS_FILE}", "exec"),
                       commit=commit)


class OnCpu(torch.Tensor):
    """Their permutation: a tensor whose ``.cuda()`` stays on the CPU."""

    def cuda(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.as_subclass(torch.Tensor)


@contextlib.contextmanager
def their_environment() -> Iterator[list[float]]:
    """``np.int`` for their NumPy-1 code, ``torch.randperm`` drawing from NumPy's global generator, and their
    ``np.random.beta`` draws recorded (into the list it yields)."""
    had_int = hasattr(np, "int")
    saved = torch.randperm, np.random.beta
    drawn: list[float] = []

    def beta(a: float, b: float) -> float:
        drawn.append(saved[1](a, b))
        return drawn[-1]

    if not had_int:
        setattr(np, "int", int)  # noqa: B010  (an attribute NumPy 2 removed; ruff reads np.int as the alias)
    torch.randperm = lambda n, *a, **k: torch.from_numpy(np.random.permutation(n)).as_subclass(OnCpu)
    np.random.beta = beta
    try:
        yield drawn
    finally:
        torch.randperm, np.random.beta = saved
        if not had_int:
            delattr(np, "int")


def opencv_detector() -> Any:
    """OpenCV's static fine-grained saliency detector (their ``cv2.saliency.StaticSaliencyFineGrained_create``)."""
    import cv2

    if not hasattr(cv2, "saliency"):
        raise ImportError("their code needs cv2.saliency (opencv-contrib-python-headless, in a separate venv), or "
                          "give authors_mix a detector")
    return cv2.saliency.StaticSaliencyFineGrained_create()


def authors_mix(authors: AuthorsCode, images: torch.Tensor, labels: torch.Tensor, *, beta: float, salmix_prob: float,
                detector: Callable[[], Any] = opencv_detector) -> SimpleNamespace:
    """One mixing step of their training loop on ``images`` (mixed in place, as theirs) and ``labels``.

    Args:
        authors: ``load_authors(repo)``.
        images: (B, C, H, W) float images (their normalised batch).
        labels: (B,) class indices.
        beta: Their ``--beta``.
        salmix_prob: Their ``--salmix_prob``.
        detector: Makes their saliency detector (an object with ``computeSaliency``); OpenCV's by default.

    Returns:
        ``mixed`` (whether their ``if`` mixed), ``r``, ``lam`` (the corrected lam, 1 when unmixed),
        ``drawn_lam``, ``perm``, ``box`` (their bbx1, bby1, bbx2, bby2: rows then columns), ``saliency`` (the
        uint8 map they computed, of ``images[perm[0]]``), ``labels_b`` and ``images``.
    """
    maps: list[np.ndarray] = []

    class Recorded:  # their detector, its map recorded as their code quantises it
        def __init__(self) -> None:
            self.inner = detector()

        def computeSaliency(self, image: np.ndarray) -> tuple[bool, np.ndarray]:  # noqa: N802  (OpenCV's name)
            ok, saliency = self.inner.computeSaliency(image)
            maps.append((saliency * 255).astype("uint8"))
            return ok, saliency

    cv2 = SimpleNamespace(saliency=SimpleNamespace(StaticSaliencyFineGrained_create=Recorded))
    namespace = {"np": np, "torch": torch, "cv2": cv2, "images": images, "labels": labels,
                 "args": SimpleNamespace(beta=beta, salmix_prob=salmix_prob)}
    with their_environment() as drawn:
        exec(authors.code, namespace)  # noqa: S102  (their code, from their repository)
    mixed = "rand_index" in namespace
    if not mixed:
        return SimpleNamespace(mixed=False, r=float(namespace["r"][0]), lam=1.0, drawn_lam=None, perm=None,
                               box=None, saliency=None, labels_b=labels, images=images)
    box = tuple(int(namespace[k]) for k in ("bbx1", "bby1", "bbx2", "bby2"))
    return SimpleNamespace(mixed=True, r=float(namespace["r"][0]), lam=float(namespace["lam"]), drawn_lam=drawn[0],
                           perm=namespace["rand_index"].as_subclass(torch.Tensor).numpy(), box=box,
                           saliency=maps[0], labels_b=namespace["labels_b"], images=images)


def golden_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Small fixed inputs: uint8 images (a bright blob on a noisy background, as their loader's pixels; saturated
    at its centre, so that some saliency maps have several maxima, where the first in row-major order counts),
    normalised as their CIFAR transform does, and labels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    centres = rng.uniform((0, 0), (HEIGHT, WIDTH), (BATCH, 2))
    blob = np.exp(-((rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2) / 6.0)
    pixels = 60 + 250 * blob[:, None] + rng.uniform(0, 45, (BATCH, 3, HEIGHT, WIDTH))
    pixels = pixels.round().clip(0, 255).astype(np.uint8)
    x = ((pixels / 255.0 - MEAN[:, None, None]) / STD[:, None, None]).astype(np.float32)
    return {"x": x, "y": rng.integers(0, CLASSES, BATCH)}


def soft_targets(y: np.ndarray, labels_b: np.ndarray, lam: float) -> np.ndarray:
    """The targets their loss implies: ``CE(pred, y) * lam + CE(pred, y_b) * (1 - lam)`` is the cross-entropy
    against ``lam * onehot(y) + (1 - lam) * onehot(y_b)``."""
    eye = np.eye(CLASSES)
    return (lam * eye[y] + (1.0 - lam) * eye[labels_b]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    args = golden_parser(__doc__.split("\n\n")[0], repo=DEFAULT_REPO, out=OUT, upstream=UPSTREAM).parse_args(argv)
    authors = load_authors(args.repo)
    arrays = golden_inputs()
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    settings, outs = {}, []
    for case, spec in CASES.items():
        setting = {**AUTHORS_DEFAULTS, **{k: v for k, v in spec.items() if k != "seed"}}
        settings[case] = {**setting, "seed": spec["seed"]}
        np.random.seed(spec["seed"])
        got = authors_mix(authors, x.clone(), y.clone(), **setting)
        arrays[f"{case}/r"] = np.array(got.r)
        arrays[f"{case}/lam"] = np.array(got.lam)
        arrays[f"{case}/target"] = soft_targets(arrays["y"], got.labels_b.numpy(), got.lam)
        if got.mixed:
            arrays[f"{case}/drawn_lam"] = np.array(got.drawn_lam)
            arrays[f"{case}/perm"] = got.perm.astype(np.int8)
            arrays[f"{case}/box"] = np.array(got.box, dtype=np.int8)
            arrays[f"{case}/saliency"] = got.saliency
        outs.append(got.images.numpy())
        print(f"{case}: r={got.r:.3f} mixed={got.mixed} box={got.box} lam={got.lam:.4f}")
    # One (cases, B, C, H, W) array in CASES' order: the mixed batches share most pixels with each other, which
    # one compressed member finds (members of an npz are compressed one by one).
    arrays["out"] = np.stack(outs)
    arrays["settings"] = np.array(repr(settings))
    import cv2

    arrays["opencv_version"] = np.array(cv2.__version__)
    write_golden(args.out, arrays, upstream=UPSTREAM, commit=authors.commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
