"""PuzzleMix (mixkit.mix.puzzlemix) against its authors' code (snu-mllab/PuzzleMix).

* tests/golden/puzzlemix.npz holds what THEIR ``mixup_process`` returned on fixed inputs, input gradients and
  draws (benchmarks/golden_puzzlemix.py): the graph cuts' masks, the mixed images (after their transport and,
  in one case, their adversarial perturbation) and the targets. mixkit seeded the same way, with its saliency
  pass answered by the same gradient, must give them bit for bit.
* A live comparison runs their code on a real model's gradient when the fetched repository is there.
* The rest: the perturbation's bound, the odd batch, the process pool, the clean loss through mixkit-train
  and DDP, and the bad-input errors (the clean loss and the saliency pass's mode: tests/test_mix_saliency.py,
  for every method of that family).
"""

# The methods draw from NumPy's global generator, as timm's Mixup does, so the tests seed that one.
# ruff: noqa: NPY002

from __future__ import annotations

import ast
import copy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixkit.mix import create_mixup
from mixkit.mix import puzzlemix as puzzlemix_module
from mixkit.mix import saliency as saliency_module
from mixkit.mix.puzzlemix_solver import label_prior, transport_blocks, transport_plan

GOLDEN = Path(__file__).parent / "golden" / "puzzlemix.npz"
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
AUTHORS_REPO = Path("/work/.mirror/snu-mllab+PuzzleMix/repo")
CASES = ["defaults", "pixels", "fine", "random", "adversarial"]


def _golden() -> tuple[dict, dict]:
    g = np.load(GOLDEN)
    return {k: g[k] for k in g.files}, ast.literal_eval(str(g["settings"]))


class Net(nn.Module):
    def __init__(self, channels: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def _case_input(g: dict, settings: dict) -> torch.Tensor:
    pixels = torch.from_numpy(g["x"])
    if settings["mean"] is None:
        return pixels
    return (pixels - torch.tensor(settings["mean"]).reshape(1, -1, 1, 1)) / torch.tensor(settings["std"]).reshape(
        1, -1, 1, 1)


def _golden_call(case: str, monkeypatch, **overrides) -> tuple[torch.Tensor, torch.Tensor, object, dict, dict]:
    """The method on the golden inputs, NumPy seeded as the golden script drew, its saliency pass answered
    by the golden gradient."""
    g, settings = _golden()
    grad = torch.from_numpy(g["grad"])
    monkeypatch.setattr(saliency_module, "input_gradient",
                        lambda model, x, target, **kw: (grad.clone(), torch.zeros(len(x), 5)))
    settings = {**settings[case], **overrides}
    with create_mixup("puzzlemix", model=Net(), num_classes=5, label_smoothing=0.0, **settings) as mix:
        np.random.seed(int(g[f"{case}/seed"]))
        out, target = mix(_case_input(g, settings), torch.from_numpy(g["y"]))
    return out, target, mix.last_draw, g, settings


@pytest.mark.parametrize("case", CASES)
def test_the_method_seeded_as_the_golden_draws_gives_the_authors_mix(case: str, monkeypatch) -> None:
    out, target, draw, g, _ = _golden_call(case, monkeypatch)
    assert draw.block_num == int(g[f"{case}/block_num"]) and draw.prior_lam == float(g[f"{case}/lam"])
    np.testing.assert_array_equal(draw.partner, g[f"{case}/partner"])
    np.testing.assert_array_equal(draw.masks, g[f"{case}/mask"].astype(np.float32))
    torch.testing.assert_close(out, torch.from_numpy(g[f"{case}/out"]), rtol=0, atol=0)
    torch.testing.assert_close(target, torch.from_numpy(g[f"{case}/target"]), rtol=0, atol=1e-7)


def test_the_golden_cases_exercise_the_transport_and_the_perturbation(monkeypatch) -> None:
    """Without the transport (or the perturbation) the same masks give other images than the authors':
    the golden check covers both steps, not only the cuts."""
    for case, off in (("defaults", dict(transport=False)), ("adversarial", dict(adv_p=0.0))):
        out, _, draw, g, _ = _golden_call(case, monkeypatch, **off)
        golden_out = torch.from_numpy(g[f"{case}/out"])
        if case == "adversarial":  # adv_p=0 draws two fewer numbers: compare on the golden masks
            np.testing.assert_array_equal(draw.masks, g[f"{case}/mask"].astype(np.float32))
        assert not torch.equal(out, golden_out)


def test_label_prior_is_the_binomial_of_the_papers_levels() -> None:
    lam, eta, blocks = 0.3, 0.2, 16
    # Hand-computed for three levels (keep, half, take): lam^2, 2 lam (1 - lam), (1 - lam)^2.
    expected = -eta * np.log(np.array([0.09, 0.42, 0.49]) + 1e-8) / blocks
    np.testing.assert_allclose(label_prior(lam, 3, eta, blocks), expected, rtol=1e-12)


def test_the_transport_moves_the_salient_block_to_where_the_mask_keeps_it() -> None:
    """A 2 x 2 grid: the image's only salient block is bottom-right, the mask keeps only the top-left one;
    with a small distance weight the plan moves it there (Algorithm 1), and the kept block shows it."""
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    saliency = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    plan = transport_plan(mask, saliency, eps=0.1)
    assert plan[0, 3, 0] == 1 and plan[0, :, 0].sum() == 1
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    moved = transport_blocks(image, plan)
    torch.testing.assert_close(moved[0, 0, :2, :2], image[0, 0, 2:, 2:])


def _dense_transport_plan(mask: torch.Tensor, saliency: torch.Tensor, eps: float) -> torch.Tensor:
    """A re-statement of the paper's Algorithm 1 as the authors' code runs it, on dense (B, n*n, n*n) plans."""
    side = mask.shape[-1]
    cells = side * side
    rows, cols = np.divmod(np.arange(cells), side)
    distance = torch.tensor(((rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2)
                            / (side - 1) ** 2, dtype=torch.float32)
    cost = eps * distance - saliency.reshape(-1, cells, 1) * (mask > 0).float().reshape(-1, 1, cells)
    for _ in range(side):
        plan = torch.zeros_like(cost).scatter_(-1, cost.min(-1)[1].unsqueeze(-1), 1)
        win = torch.zeros_like(cost).scatter_(-2, (plan * cost).min(-2)[1].unsqueeze(-2), 1) * plan
        cost = cost + (1 - win) * plan
    return win


def test_the_transport_plan_equals_the_dense_algorithm_ties_included() -> None:
    """mixkit resolves each round's column contest from the rows' choices instead of a dense matrix; the
    plans must be the dense algorithm's exactly, also with tied saliency, empty or full masks and eps 0."""
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        side = (2, 4, 8)[trial % 3]
        levels = torch.randint(0, 3, (5, 1, side, side), generator=g).float() / 2
        mask = [levels, torch.ones_like(levels), torch.zeros_like(levels)][trial % 3 if trial % 5 == 0 else 0]
        saliency = torch.rand(5, side, side, generator=g)
        if trial % 2:
            saliency = (saliency * 3).floor()  # ties, and all-zero images
        saliency = saliency / saliency.flatten(1).sum(1).clamp_min(1e-12).reshape(-1, 1, 1)
        eps = (0.8, 0.0, 0.01, 5.0)[trial % 4]
        assert torch.equal(transport_plan(mask, saliency, eps=eps), _dense_transport_plan(mask, saliency, eps)), trial


def test_the_perturbation_stays_in_its_ball_and_in_the_pixel_range() -> None:
    torch.manual_seed(0)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    pixels = torch.rand(4, 3, 16, 16)
    x = (pixels - 0.5) / 0.25
    with create_mixup("puzzlemix", model=Net(), num_classes=5, adv_p=1.0, adv_eps=8.0, transport=False,
                      block_num=4, mean=mean, std=std) as mix:
        np.random.seed(0)
        out, _ = mix(x, torch.tensor([0, 1, 2, 3]))
        draw = mix.last_draw
    assert draw.adversarial == (True, True) and draw.noise.abs().max() <= 8.0 / 255 + 1e-7
    mixed_pixels = out * 0.25 + 0.5
    assert mixed_pixels.min() >= -1e-6 and mixed_pixels.max() <= 1 + 1e-6
    mask = F.interpolate(torch.from_numpy(draw.masks).unsqueeze(1), size=16)
    plain = mask * pixels + (1 - mask) * pixels.flip(0)
    assert 0 < (mixed_pixels - plain).abs().max() <= 8.0 / 255 + 1e-5


def test_an_odd_batchs_middle_is_left_unmixed_and_targets_follow_the_mask() -> None:
    x, y = torch.randn(5, 3, 16, 16), torch.arange(5)
    with create_mixup("puzzlemix", model=Net(), num_classes=5, block_num=4, label_smoothing=0.0) as mix:
        np.random.seed(1)
        out, target = mix(x, y)
        draw = mix.last_draw
    torch.testing.assert_close(out[2], x[2], rtol=0, atol=0)
    own = draw.masks.reshape(5, -1).mean(1)
    flip = np.arange(5)[::-1]
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[np.arange(5), y.numpy()] += own
    expected[np.arange(5), y.numpy()[flip]] += 1 - own
    torch.testing.assert_close(target, torch.from_numpy(expected))


def test_under_autocast_the_mix_keeps_the_inputs_dtype_and_the_authors_values(monkeypatch) -> None:
    """mixkit-train calls saliency methods inside its autocast: the transport and the mix stay in the inputs'
    dtype (the authors' values, given the same gradient), not in the autocast's."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, target, draw, g, _ = _golden_call("fine", monkeypatch)
    assert out.dtype == torch.float32 and target.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(g["fine/out"]), rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES)
def test_on_cuda_the_mix_follows_the_host_masks_and_matches_the_authors(case: str, monkeypatch) -> None:
    """The saliency, costs, transport and mix on the device, the cuts on the host. The costs are computed by
    CUDA kernels, so a block whose integer energy sits on a rounding boundary may flip: the masks must equal
    the golden ones in at least 95% of the blocks, and the images and targets must follow the masks applied."""
    g, settings = _golden()
    grad = torch.from_numpy(g["grad"]).cuda()
    monkeypatch.setattr(saliency_module, "input_gradient",
                        lambda model, x, target, **kw: (grad.clone(), torch.zeros(len(x), 5, device=x.device)))
    settings = settings[case]
    x, y = _case_input(g, settings).cuda(), torch.from_numpy(g["y"]).cuda()
    with create_mixup("puzzlemix", model=Net().cuda(), num_classes=5, label_smoothing=0.0, **settings) as mix:
        np.random.seed(int(g[f"{case}/seed"]))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, target = mix(x, y)
        draw = mix.last_draw
    assert out.device == x.device and target.device == x.device and out.dtype == x.dtype
    assert (draw.masks == g[f"{case}/mask"].astype(np.float32)).mean() >= 0.95
    if np.array_equal(draw.masks, g[f"{case}/mask"].astype(np.float32)):
        torch.testing.assert_close(out.cpu(), torch.from_numpy(g[f"{case}/out"]), rtol=0, atol=1e-6)
    lam = torch.from_numpy(draw.masks.reshape(len(x), -1).mean(1))
    expected = lam[:, None] * F.one_hot(y.cpu(), 5) + (1 - lam[:, None]) * F.one_hot(y.cpu()[draw.partner], 5)
    torch.testing.assert_close(target.cpu(), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_process_pool_cuts_the_same_masks() -> None:
    x, y = torch.randn(6, 3, 16, 16), torch.arange(6) % 5
    masks = []
    for mp in (0, 2):
        with create_mixup("puzzlemix", model=Net(), num_classes=5, mp=mp) as mix:
            np.random.seed(3)
            mix(x, y)
            masks.append(mix.last_draw.masks)
    np.testing.assert_array_equal(masks[0], masks[1])


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(block_num=1), "block_num must be an int >= 2"),
    (dict(n_labels=1), "n_labels must be an int >= 2"),
    (dict(adv_p=1.5), "adv_p must be a probability"),
    (dict(t_size=0), "t_size must be an int >= 1"),
    (dict(beta=-1.0), "beta must be a finite number >= 0"),
    (dict(mean=(0.5,)), "pass both mean and std"),
    (dict(mode="elem"), "mode='batch'"),
    (dict(cutmix_alpha=1.0), "--cutmix 0"),
])
def test_bad_settings_are_refused_with_the_fix(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_mixup("puzzlemix", model=Net(), num_classes=5, **kwargs)


def test_images_the_grid_cannot_split_are_refused_with_the_fix() -> None:
    y = torch.arange(4)
    with create_mixup("puzzlemix", model=Net(), num_classes=5) as mix:
        with pytest.raises(ValueError, match="none of the grids .* splits 3 x 3 images"):
            mix(torch.randn(4, 3, 3, 3), y)
        with pytest.raises(ValueError, match="square"):
            mix(torch.randn(4, 3, 16, 8), y)
    with create_mixup("puzzlemix", model=Net(), num_classes=5, block_num=8) as mix:
        with pytest.raises(ValueError, match="block_num=8 needs 12 px images .* pass a block_num that divides 12"):
            mix(torch.randn(4, 3, 12, 12), y)
    with create_mixup("puzzlemix", model=Net(), num_classes=5, mean=(0.5,), std=(0.2,)) as mix:
        with pytest.raises(ValueError, match="one per channel"):
            mix(torch.randn(4, 3, 16, 16), y)


@pytest.mark.skipif(not (AUTHORS_REPO.is_dir() and shutil.which("git")),
                    reason="the authors' repository is not fetched (fetch github:snu-mllab/PuzzleMix)")
@pytest.mark.parametrize("settings", [dict(pairing="random"), dict(adv_p=1.0, block_num=4, t_size=2)],
                         ids=["random", "adversarial"])
def test_live_against_the_authors_code_on_a_models_gradient(settings: dict, tmp_path: Path) -> None:
    """Their mixup_process on the gradient main.py computes (an eval-mode clean forward, the mean
    cross-entropy; at the perturbed batch when adversarial), against the method on the same model, seed and
    batch of 32 px images."""
    sys.path.append(str(BENCHMARKS_DIR))
    try:
        import golden_puzzlemix as golden
    finally:
        sys.path.remove(str(BENCHMARKS_DIR))
    torch.manual_seed(1)
    model = Net()
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    full = {**golden.AUTHORS_DEFAULTS, **settings}

    def their_gradient(inputs: torch.Tensor) -> torch.Tensor:
        net = copy.deepcopy(model).eval()
        inputs = inputs.clone().requires_grad_(True)
        F.cross_entropy(net(inputs), y).backward()
        return inputs.grad

    seed = 4
    while True:  # a seed whose permutation pairs no sample with itself (mixkit leaves those unmixed)
        np.random.seed(seed)
        draws = golden.draw_like_mixkit(6, full, size=32)
        if not np.any(draws["partner"] == np.arange(6)):
            break
        seed += 1
    noise, grad = None, their_gradient(x)
    if any(draws["adversarial"]):
        noise, grad = golden.authors_perturbation(x, their_gradient, draws, full)
    their_out, their_target, their_masks = golden.authors_mix(golden.load_authors(AUTHORS_REPO, tmp_path), x, y,
                                                              grad, draws, 5, full, noise=noise)
    with create_mixup("puzzlemix", model=model, num_classes=5, label_smoothing=0.0, **settings) as mix:
        np.random.seed(seed)
        out, target = mix(x.clone(), y)
    np.testing.assert_array_equal(mix.last_draw.masks, their_masks.astype(np.float32))
    torch.testing.assert_close(out, their_out, rtol=0, atol=0)
    torch.testing.assert_close(target, their_target, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_mixkit_train_adds_and_logs_the_clean_loss_and_passes_the_loaders_normalisation(tmp_path, monkeypatch):
    from train_fixtures import make_image_folder, tiny_args, train_in_process

    seen = {}
    original = puzzlemix_module.PuzzleMix.set_input_normalization

    def recording(self, mean, std):
        original(self, mean, std)
        seen.update(mean=self.mean, std=self.std)

    monkeypatch.setattr(puzzlemix_module.PuzzleMix, "set_input_normalization", recording)
    data = make_image_folder(tmp_path / "data", train_per_class=4)
    summary = train_in_process(tiny_args(data, tmp_path / "out", "--mixup", "puzzlemix", "--mean", "0.5", "0.4",
                                         "0.3", "--std", "0.2", "0.2", "0.2", "--mixup-kwargs", "clean_lam=1",
                                         "adv_p=0.5"))
    assert seen == {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2)}
    header = (tmp_path / "out" / "run" / "summary.csv").read_text().splitlines()[0]
    assert "clean_loss" in header.split(",")
    assert summary["final"]["clean_loss"] > 0


def _ddp_clean_loss_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import json

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = DistributedDataParallel(Net())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with create_mixup("puzzlemix", model=model, num_classes=5, clean_lam=1.0, adv_p=0.5) as mix:
            np.random.seed(100 + rank)  # each rank mixes its own batch differently
            for step in range(2):
                g = torch.Generator().manual_seed(10 * rank + step)
                x, y = torch.rand(4, 3, 16, 16, generator=g), torch.randint(0, 5, (4,), generator=g)
                x_in, target = mix(x, y)
                loss = torch.sum(-target * F.log_softmax(model(x_in), -1), -1).mean() + mix.extra_loss()
                optimizer.zero_grad()
                loss.backward()  # the clean graph runs through the unwrapped module's parameters
                optimizer.step()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(float(sum(p.double().sum() for p in model.parameters()))))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_clean_loss_trains_under_ddp_with_two_processes(tmp_path: Path) -> None:
    """The clean loss's graph goes through the unwrapped model (the saliency pass does not run DDP's forward);
    its gradients still reach DDP's buckets, so the replicas stay identical although each rank mixed and
    perturbed differently."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_ddp_clean_loss_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    sums = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sums[0] == pytest.approx(sums[1], rel=1e-9)
