"""Co-Mixup (mixkit.mix.comixup) against its authors' code (snu-mllab/Co-Mixup).

* tests/golden/comixup.npz holds what THEIR ``mixup_process`` returned on fixed inputs, saliency and draws
  (benchmarks/golden_comixup.py): masks, mixed images and targets. mixkit's optimisation, and the whole
  method seeded the same way, must give them exactly (masks and images bit for bit, targets to 1e-6:
  mixkit sums the label weights in another order).
* A live comparison runs their code on a real model's saliency when the fetched repository is there.
* The rest: the paper's properties (targets are the label shares of the blocks, the optimisation improves
  its objective), the odd-sized partitions, and the bad-input errors.
"""

# The methods draw from NumPy's global generator, as timm's Mixup does, so the tests seed that one.
# ruff: noqa: NPY002

from __future__ import annotations

import ast
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixkit.mix import create_mixup
from mixkit.mix import saliency as saliency_module
from mixkit.mix.comixup_solver import (
    assign_blocks,
    block_saliency,
    compatibility,
    label_weights,
    mix_blocks,
    peak_distance,
    saliency_map,
)

GOLDEN = Path(__file__).parent / "golden" / "comixup.npz"
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
AUTHORS_REPO = Path("/work/.mirror/snu-mllab+Co-Mixup/repo")
SETTING_NAMES = {"m_block_num", "m_part", "m_beta", "m_gamma", "m_thres", "m_thres_type", "m_eta", "m_omega",
                 "m_niter", "set_resolve", "mixup_alpha"}


def _golden() -> tuple[dict, dict]:
    g = np.load(GOLDEN)
    return {k: g[k] for k in g.files}, ast.literal_eval(str(g["settings"]))


def _parts(batch: int, m_part: int) -> list[slice]:
    return [slice(s, min(s + m_part, batch)) for s in range(0, batch, m_part)]


class Net(nn.Module):
    def __init__(self, channels: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


@pytest.mark.parametrize("case", ["defaults", "parts", "compat"])
def test_optimisation_gives_the_authors_masks_images_and_targets(case: str) -> None:
    g, settings = _golden()
    s = settings[case]
    x, y, sc = torch.from_numpy(g["x"]), torch.from_numpy(g["y"]), torch.from_numpy(g["sc"])
    blocks, distance = block_saliency(sc, s["m_block_num"]), peak_distance(sc)
    outs, weights = [], torch.zeros(len(y), len(y))
    for k, part in enumerate(_parts(len(y), s["m_part"])):
        masks = assign_blocks(blocks[part], compatibility(distance[part, part], s["m_omega"]),
                              g[f"{case}/prior{k}"], g[f"{case}/init{k}"], beta=s["m_beta"], gamma=s["m_gamma"],
                              eta=s["m_eta"], thres=s["m_thres"], thres_type=s["m_thres_type"],
                              set_resolve=s["set_resolve"], niter=s["m_niter"])
        assert torch.equal(masks, torch.from_numpy(g[f"{case}/mask{k}"].astype(np.float32)))
        outs.append(mix_blocks(x[part], masks))
        weights[part, part] = label_weights(masks)
    out = torch.cat(outs)
    if f"{case}/out" in g:
        assert torch.equal(out, torch.from_numpy(g[f"{case}/out"]))
    else:
        np.testing.assert_allclose(out.double().sum((1, 2, 3)).numpy(), g[f"{case}/out_sum"], rtol=0, atol=1e-9)
    target = weights @ F.one_hot(y, 4).float()
    np.testing.assert_allclose(target.numpy(), g[f"{case}/target"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["defaults", "parts", "compat"])
def test_the_method_seeded_as_the_golden_draws_gives_the_authors_mix(case: str, monkeypatch) -> None:
    """The whole call: NumPy seeded as the golden script drew, the saliency pass replaced by a gradient
    whose saliency is the golden one (sqrt(g^2) == |g| exactly in binary floating point)."""
    g, settings = _golden()
    s = settings[case]
    x, y, sc = torch.from_numpy(g["x"]), torch.from_numpy(g["y"]), torch.from_numpy(g["sc"])
    model = Net(channels=x.shape[1])
    monkeypatch.setattr(saliency_module, "input_gradient",
                        lambda model, x, *a, **k: (sc.unsqueeze(1), torch.zeros(len(x), 4)))
    kwargs = {k: v for k, v in s.items() if k in SETTING_NAMES}
    with create_mixup("comixup", model=model, num_classes=4, label_smoothing=0.0, **kwargs) as mix:
        np.random.seed(int(g[f"{case}/seed"]))
        out, target = mix(x.clone(), y)
        draw = mix.last_draw
    for k in range(len(draw.groups)):
        np.testing.assert_array_equal(draw.priors[k], g[f"{case}/prior{k}"])
        np.testing.assert_array_equal(draw.inits[k], g[f"{case}/init{k}"])
        np.testing.assert_array_equal(draw.masks[k], g[f"{case}/mask{k}"].astype(np.float32))
    if f"{case}/out" in g:
        assert torch.equal(out, torch.from_numpy(g[f"{case}/out"]))
    np.testing.assert_allclose(target.numpy(), g[f"{case}/target"], rtol=0, atol=1e-6)


def test_targets_are_the_smoothed_labels_weighted_by_their_block_shares() -> None:
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    with create_mixup("comixup", model=model, num_classes=4, label_smoothing=0.2) as mix:
        np.random.seed(3)
        out, target = mix(x.clone(), y)
        masks = mix.last_draw.masks[0]
    shares = masks.sum((1, 2)) / 16  # each of the 4 x 4 blocks weighs 1/16
    smoothed = np.full((6, 4), 0.2 / 4)
    smoothed[np.arange(6), y.numpy()] += 0.8
    np.testing.assert_allclose(target.numpy(), shares @ smoothed, rtol=0, atol=1e-6)
    # Every 4 x 4 pixel block of an output is one input's block, or the mean of two.
    blocks = masks.reshape(6, 4, 4, 6)
    for o, r, c in np.ndindex(6, 4, 4):
        expected = sum(w * x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] for i, w in enumerate(blocks[o, r, c]) if w)
        torch.testing.assert_close(out[o, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4], expected, rtol=0, atol=1e-6)


def _paper_objective(saliency: np.ndarray, prior: np.ndarray, masks: np.ndarray, beta: float, gamma: float,
                     eta: float) -> float:
    """The paper's objective (Eq. 4, per-block coefficients as the authors scale them), written out in loops:
    the unary term of the normalised saliency and the prior, the squared differences of neighbouring blocks,
    and gamma * sum over inputs of the products of their block counts in different outputs."""
    n_out, h, w, n = masks.shape
    blocks = h * w
    s = saliency / saliency.sum((1, 2), keepdims=True)
    total = 0.0
    for o, r, c, i in np.ndindex(n_out, h, w, n):
        total += masks[o, r, c, i] * (-s[i, r, c] - eta / blocks * np.log(prior[i] + 1e-8))
    for o in range(n_out):
        total += beta / blocks / 2 * (np.square(np.diff(masks[o], axis=0)).sum() + np.square(np.diff(masks[o], axis=1)).sum())
    counts = masks.sum((1, 2))
    for i in range(n):
        for o1 in range(n_out):
            for o2 in range(n_out):
                if o1 != o2:
                    total += gamma / blocks * counts[o1, i] * counts[o2, i]
    return total


def test_the_optimisation_lowers_the_papers_objective_from_the_random_start() -> None:
    """Without the threshold (tau = 0) and with A = I the modular penalty is the diversity term's exact
    share of each output, so the sweeps descend the paper's objective from the random labeling."""
    rng = np.random.default_rng(0)
    saliency = rng.random((8, 4, 4)).astype(np.float32)
    init = rng.integers(0, 8, (8, 4, 4))
    prior = rng.dirichlet(np.full(8, 2.0))
    masks = assign_blocks(torch.from_numpy(saliency), torch.eye(8), prior, init, thres=0.0, set_resolve=False)
    start = np.eye(8)[init]
    after = _paper_objective(saliency, prior, masks.numpy(), 0.32, 1.0, 0.05)
    before = _paper_objective(saliency, prior, start, 0.32, 1.0, 0.05)
    assert after < before - 0.5 * abs(before)
    assert torch.equal(masks.sum(-1), torch.ones(8, 4, 4))  # every block is filled exactly once


def test_partitions_mix_within_themselves_and_a_lone_last_sample_is_left_alone() -> None:
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    with create_mixup("comixup", model=model, num_classes=4, label_smoothing=0.0, m_part=2, m_block_num=2) as mix:
        np.random.seed(0)
        out, target = mix(x.clone(), y)
        draw = mix.last_draw
    assert draw.groups == (2, 2, 1) and draw.masks[2] is None
    torch.testing.assert_close(out[4], x[4], rtol=0, atol=0)
    torch.testing.assert_close(target[4], F.one_hot(y[4], 4).float())
    assert not draw.weights[:2, 2:].any() and not draw.weights[2:4, :2].any() and not draw.weights[2:4, 4:].any()


def test_a_random_grid_is_drawn_per_batch_from_the_authors_choices() -> None:
    model = Net()
    x, y = torch.randn(4, 3, 16, 16), torch.arange(4)
    with create_mixup("comixup", model=model, num_classes=4, m_block_num=-1, m_niter=1) as mix:
        np.random.seed(0)
        sizes = set()
        for _ in range(16):
            mix(x.clone(), y)
            sizes.add(mix.last_draw.block_num)
            assert mix.last_draw.masks[0].shape[1:3] == (mix.last_draw.block_num,) * 2
    assert sizes == {2, 4, 8, 16}


def test_the_saliency_pass_uses_the_models_gradient() -> None:
    """The block saliency the method optimises is the RMS over channels of the clean loss's input gradient."""
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(4, 3, 16, 16), torch.arange(4)
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(copy.deepcopy(model)(xr), y).backward()
    expected = F.avg_pool2d(xr.grad.square().mean(1).sqrt(), 4)
    torch.testing.assert_close(block_saliency(saliency_map(xr.grad), 4), expected)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(mode="elem"), ValueError, "mode='batch'"),
    (dict(pairing="random"), ValueError, "no pairing"),
    (dict(m_part=1), ValueError, "m_part"),
    (dict(m_block_num=1), ValueError, "m_block_num"),
    (dict(m_thres_type="medium"), ValueError, "m_thres_type"),
    (dict(cutmix_alpha=1.0), ValueError, "--cutmix 0"),
    (dict(mixup_alpha=0.0), ValueError, "mixup_alpha"),
])
def test_bad_settings_are_refused_with_the_fix(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        create_mixup("comixup", model=Net(), num_classes=4, **kwargs)


def test_images_too_small_for_the_grid_are_refused_with_the_fix() -> None:
    y = torch.arange(4)
    with create_mixup("comixup", model=Net(), num_classes=4, m_block_num=8) as mix:
        with pytest.raises(ValueError, match="m_block_num <= 6"):
            mix(torch.randn(4, 3, 6, 6), y)
    with create_mixup("comixup", model=Net(), num_classes=4, m_block_num=-1) as mix:
        with pytest.raises(ValueError, match="up to 16 x 16"):
            mix(torch.randn(4, 3, 12, 12), y)


@pytest.mark.skipif(not (AUTHORS_REPO.is_dir() and shutil.which("git")),
                    reason="the authors' repository is not fetched (fetch github:snu-mllab/Co-Mixup)")
def test_the_defaults_are_the_authors_main_py() -> None:
    """Every setting's default, the clean loss's weight included, read from their main.py's argparse."""
    source = subprocess.run(["git", f"--git-dir={AUTHORS_REPO}", "show", "HEAD:main.py"], check=True,
                            capture_output=True, text=True).stdout
    theirs = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            if default is not None:
                theirs[node.args[0].value.lstrip("-")] = ast.literal_eval(default)
    names = SETTING_NAMES | {"clean_lam"}
    with create_mixup("comixup", model=Net(), num_classes=4) as mix:
        ours = {name: getattr(mix, name) for name in names}
    assert ours == {name: theirs[name] for name in names}


@pytest.mark.skipif(not (AUTHORS_REPO.is_dir() and shutil.which("git")),
                    reason="the authors' repository is not fetched (fetch github:snu-mllab/Co-Mixup)")
def test_live_against_the_authors_code_on_a_models_saliency(tmp_path: Path) -> None:
    """Their mixup_process on the saliency main.py computes (a train-mode clean forward, their loss scaled by
    2 / num_classes, an exact power of two here), against the method on the same model, seed and batch: an odd
    batch in partitions of 4 + 3 on a 4 x 4 grid of 32 px images."""
    sys.path.append(str(BENCHMARKS_DIR))
    try:
        import golden_comixup as golden
    finally:
        sys.path.remove(str(BENCHMARKS_DIR))
    torch.manual_seed(1)
    model = Net()
    x, y = torch.randn(7, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    settings = dict(m_part=4)
    inputs = x.clone().requires_grad_(True)
    loss = 2 * F.cross_entropy(copy.deepcopy(model)(inputs), y, reduction="none") / 4
    loss.mean().backward()
    sc = torch.sqrt(torch.mean(inputs.grad ** 2, dim=1))
    np.random.seed(5)
    draws = golden.draw_like_mixkit(7, 4, 4, 2.0)
    modules = golden.load_authors(AUTHORS_REPO, tmp_path)
    their_out, their_target, their_masks = golden.authors_mix(modules, x.clone(), y, sc, draws, 4, **settings)
    with create_mixup("comixup", model=model, num_classes=4, label_smoothing=0.0, **settings) as mix:
        np.random.seed(5)
        out, target = mix(x.clone(), y)
    for ours, theirs in zip(mix.last_draw.masks, their_masks, strict=True):
        np.testing.assert_array_equal(ours, theirs.numpy())
    assert torch.equal(out, their_out)
    torch.testing.assert_close(target, their_target, rtol=0, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_mix_and_targets_follow_the_host_masks() -> None:
    """The saliency pass runs on the device, the graph cuts on the host; the mosaics and targets come back
    to the batch's device and follow the masks of ``last_draw``."""
    torch.manual_seed(0)
    model = Net().cuda()
    x, y = torch.randn(6, 3, 16, 16, device="cuda"), torch.tensor([0, 1, 2, 3, 0, 1], device="cuda")
    with create_mixup("comixup", model=model, num_classes=4, label_smoothing=0.0, m_part=4) as mix:
        np.random.seed(0)
        with torch.autocast("cuda", dtype=torch.bfloat16):  # as mixkit-train calls a saliency method
            out, target = mix(x.clone(), y)
        draw = mix.last_draw
    assert out.device == x.device and target.device == x.device and out.dtype == x.dtype
    expected = torch.cat([mix_blocks(x[part].cpu(), torch.from_numpy(mask))
                          for part, mask in zip(_parts(6, 4), draw.masks, strict=True)])
    torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(target.cpu(), torch.from_numpy(draw.weights) @ F.one_hot(y.cpu(), 4).float())


def test_under_autocast_the_mosaic_keeps_the_inputs_dtype_and_values() -> None:
    """mixkit-train calls a saliency method inside its autocast: the mosaic must not be rounded to bf16."""
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(4, 3, 16, 16), torch.arange(4)
    with create_mixup("comixup", model=model, num_classes=4) as mix:
        np.random.seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = mix(x.clone(), y)
        masks = mix.last_draw.masks[0]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, mix_blocks(x, torch.from_numpy(masks)), rtol=0, atol=0)
