"""PuzzleMix (Kim et al., "Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal Mixup", ICML 2020).

Each sample is mixed with its partner (timm's flip pairing by default; ``pairing='random'`` is the authors'
permutation) by a block mask over a ``block_num x block_num`` grid and a transport of each input's blocks
inside its own image (``mixkit.mix.puzzlemix_solver``: the graph's costs, gco's alpha-beta swap, the paper's
masked transport). The saliency is the root mean square over channels of the loss gradient on the clean
batch (``mixkit.mix.saliency``: a second forward/backward per step; in eval mode, as the authors', unless
the clean loss is on). The target is timm's soft target with lam the mean of the applied mask per sample.

Options of the authors' code, each as theirs (snu-mllab/PuzzleMix ``main.py`` / ``mixup.py``):

* ``clean_lam > 0``: the saliency pass runs in the model's current (training) mode and its cross-entropy on
  the clean batch, times ``clean_lam``, is added to the loss (``extra_loss``, logged as ``clean_loss``);
* ``adv_p > 0``: with probability ``adv_p`` for each of the two inputs of every mix, an FGSM-like
  perturbation of at most ``adv_eps / 255`` in pixel scale: a uniform random start, the saliency pass on the
  perturbed batch, one signed-gradient step of ``(adv_eps + 2) / 255``, clipped, scaled by a uniform draw,
  and added to that input before the transport (pixels clipped to [0, 1]).

The pixel scale (the data smoothness term, the perturbation's clipping) is the inputs' ``x * std + mean``:
pass the loader's normalisation as ``mean``/``std`` (``mixkit-train`` does); None takes the inputs as pixels.

The draw (NumPy's global generator): lam (timm's ``prob`` then Beta(mixup_alpha)), the grid when
``block_num=-1``, the partner with ``pairing='random'``, then with ``adv_p > 0`` the two perturbation
choices, the scale and a seed for the random start (drawn on the batch's device). The graph cuts run on the
host: one device-to-host copy of the graph's costs per step and one cut per pair, in this process or, with
``mp > 0``, in a pool of processes.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .base import Draw
from .comixup_solver import saliency_map
from .puzzlemix_solver import (
    block_costs,
    fitting_grids,
    graph_cut_mask,
    normalised_block_saliency,
    transport_blocks,
    transport_plan,
)
from .rng import rand, randint
from .saliency import GradientSaliencyMixupBase
from .targets import Lam, to_device

__all__ = ["PuzzleMix", "PuzzleMixDraw"]

RANDOM_BLOCKS = -1
RANDOM_BLOCK_CHOICES = (2, 4, 8, 16)  # the authors' 2 ** randint(1, 5), one per batch
SAME_GRID = -1  # t_size: transport at the mask's grid
PIXEL_LEVELS = 255.0  # adv_eps is in 1/255 of the pixel range, as the authors'
SEED_RANGE = 2 ** 31


@dataclass(frozen=True, eq=False)
class PuzzleMixDraw(Draw):
    """A PuzzleMix call: its random choices, and after ``resolve`` what the mix needs.

    Attributes:
        block_num: The grid is ``block_num x block_num`` blocks.
        prior_lam: The drawn lam, which the mask's prior pulls towards (``lam`` is the applied mask's mean).
        adversarial: Whether each of the two inputs (the sample, its partner) is perturbed.
        adv_scale: The uniform scale of the perturbation.
        adv_seed: Seed of the perturbation's random start.
        masks: (B, block_num, block_num) float32 weight of each sample in its blocks (None before ``resolve``).
        saliency: (B, H, W) float32 saliency on the batch's device (for the transport).
        noise: (B, C, H, W) the perturbation in pixel scale, on the batch's device (None without).
    """

    block_num: int = 0
    prior_lam: float = 1.0
    adversarial: tuple[bool, bool] = (False, False)
    adv_scale: float = 0.0
    adv_seed: int = 0
    masks: np.ndarray | None = None
    saliency: torch.Tensor | None = None
    noise: torch.Tensor | None = None


def _check_int(name: str, value: object, low: int, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}{extra}, got {value!r}")


class PuzzleMix(GradientSaliencyMixupBase):
    """PuzzleMix: saliency-guided block masks by graph cuts and the transport of blocks (see the module
    docstring). The defaults are the authors' ``main.py``'s (CIFAR-100, PreActResNet-18).

    Args:
        block_num: Side of the block grid; -1 draws 2, 4, 8 or 16 per batch (the authors'), among those that
            split the image into equal blocks the neighbourhood and transport cells fit.
        n_labels: Number of mask levels (2 to keep or take a block, 3 adds half-half, ...).
        beta: Label smoothness between neighbouring blocks.
        gamma: Data smoothness: the pixel difference across the boundaries of neighbouring blocks.
        eta: Weight of the prior pulling the mask towards the drawn lam.
        neigh_size: Side in pixels of the cells compared across a boundary (capped at the block size).
        transport: Move each input's salient blocks to where the mask keeps it.
        t_eps: Weight of the transport distance against the saliency gained.
        t_size: Side in pixels of the transported cells; -1 the mask's blocks.
        adv_p: Probability of the adversarial perturbation of each input (0: none).
        adv_eps: Bound of the perturbation, in 1/255 of the pixel range.
        mp: Worker processes for the graph cuts (0: in this process; the authors' default is 8).
        mean: Per-channel mean of the inputs' normalisation (None: the inputs are pixels in [0, 1]).
        std: Per-channel std of the inputs' normalisation.
        **kwargs: ``GradientSaliencyMixupBase``'s ``clean_lam`` (default 0, the authors' ``main.py``) and
            ``MixupBase``'s arguments; ``mixup_alpha`` (default 1.0) draws the prior's lam, ``mode`` must be
            'batch' (one lam per batch, as the authors'), CutMix is refused.
    """

    method = "puzzlemix"
    default_mixup_alpha = 1.0
    supports_cutmix = False

    def __init__(
        self,
        *,
        block_num: int = RANDOM_BLOCKS,
        n_labels: int = 3,
        beta: float = 1.2,
        gamma: float = 0.5,
        eta: float = 0.2,
        neigh_size: int = 4,
        transport: bool = True,
        t_eps: float = 0.8,
        t_size: int = SAME_GRID,
        adv_p: float = 0.0,
        adv_eps: float = 10.0,
        mp: int = 0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        **kwargs,
    ) -> None:
        if kwargs.get("mode", "batch") != "batch":
            raise ValueError(f"puzzlemix draws one lam per batch: use mode='batch' (--mixup-mode batch), "
                             f"got mode={kwargs['mode']!r}")
        super().__init__(**kwargs)
        if block_num != RANDOM_BLOCKS:
            _check_int("block_num", block_num, 2, f" (the grid side) or -1 (drawn from {RANDOM_BLOCK_CHOICES})")
        _check_int("n_labels", n_labels, 2, " (mask levels)")
        _check_int("neigh_size", neigh_size, 1, " (pixels)")
        _check_int("mp", mp, 0, " (worker processes; 0 cuts in this process)")
        if t_size != SAME_GRID:
            _check_int("t_size", t_size, 1, " (pixels) or -1 (the mask's blocks)")
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta), ("t_eps", t_eps),
                            ("adv_eps", adv_eps)):
            if not (isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
                    and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(adv_p, int | float) and 0.0 <= adv_p <= 1.0):
            raise ValueError(f"adv_p must be a probability in [0, 1], got {adv_p!r}")
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std (the inputs' normalisation), or neither (inputs are pixels)")
        if std is not None and any(not s > 0 for s in std):
            raise ValueError(f"std must be > 0 per channel, got {std!r}")
        self.block_num = block_num
        self.n_labels = n_labels
        self.beta, self.gamma, self.eta = float(beta), float(gamma), float(eta)
        self.neigh_size = neigh_size
        self.transport = bool(transport)
        self.t_eps = float(t_eps)
        self.t_size = t_size
        self.adv_p, self.adv_eps = float(adv_p), float(adv_eps)
        self.mp = mp
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self._pool: ProcessPoolExecutor | None = None
        try:
            import gco  # noqa: F401
        except ImportError as err:
            raise ImportError("puzzlemix's graph cuts need gco-wrapper, a mixkit dependency: "
                              "pip install gco-wrapper") from err

    def set_input_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """The loader's normalisation of the inputs, unless ``mean``/``std`` were given (``mixkit-train``
        calls it once the data config is resolved)."""
        if self.mean is None:
            self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    # -- the draw -----------------------------------------------------------------------------------
    def grids(self, size: int) -> list[int]:
        """The grid sides this method may use on ``size x size`` images."""
        choices = RANDOM_BLOCK_CHOICES if self.block_num == RANDOM_BLOCKS else (self.block_num,)
        return fitting_grids(size, choices, self.neigh_size, self.t_size if self.transport else SAME_GRID)

    def _check_images(self, x: torch.Tensor) -> None:
        height, width = x.shape[-2:]
        if height != width:
            raise ValueError(f"puzzlemix mixes square images (a square grid of square blocks, as the authors'); "
                             f"got {height} x {width}: crop or resize to a square (--img-size)")
        if self.grids(width):
            return
        sizes = f"t_size={self.t_size}, " if self.transport and self.t_size != SAME_GRID else ""
        if self.block_num == RANDOM_BLOCKS:
            raise ValueError(f"puzzlemix: none of the grids {RANDOM_BLOCK_CHOICES} splits {width} x {width} images "
                             f"into equal blocks that neigh_size={self.neigh_size} and {sizes}cells divide (the "
                             f"images are too small, or their side is odd): use images whose side is a multiple of "
                             f"2 x neigh_size (32 px, say), or a smaller neigh_size (--mixup-kwargs neigh_size=...)")
        raise ValueError(f"puzzlemix: block_num={self.block_num} needs {width} px images split into "
                         f"{self.block_num} equal blocks whose side neigh_size={self.neigh_size} and {sizes}cells "
                         f"divide: pass a block_num that divides {width} (--mixup-kwargs block_num=..., or -1), "
                         f"a smaller neigh_size, or images of a multiple of {self.block_num} px")

    def draw(self, x: torch.Tensor) -> Draw:
        self._check_images(x)
        lam, _ = self._draw_lam(None)
        batch_size = x.shape[0]
        if lam == 1.0 or batch_size < 2:
            return Draw()
        grids = self.grids(x.shape[-1])
        block_num = grids[randint(len(grids))] if self.block_num == RANDOM_BLOCKS else self.block_num
        partner = self._draw_partner(batch_size)
        partner = np.arange(batch_size)[::-1].copy() if partner is None else partner
        adversarial, scale, seed = (False, False), 0.0, 0
        if self.adv_p > 0:
            adversarial = (bool(rand() < self.adv_p), bool(rand() < self.adv_p))
            if any(adversarial):
                scale, seed = float(rand()), randint(SEED_RANGE)
        return PuzzleMixDraw(branch="input", layer="input", lam=float(lam), partner=partner, block_num=block_num,
                             prior_lam=float(lam), adversarial=adversarial, adv_scale=scale, adv_seed=seed)

    # -- the saliency pass and the cuts -------------------------------------------------------------------
    def _normalisation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.mean is None:
            return None
        if len(self.mean) != x.shape[1] or len(self.std) != x.shape[1]:
            raise ValueError(f"puzzlemix: mean/std have {len(self.mean)}/{len(self.std)} values for {x.shape[1]}-"
                             "channel inputs: pass one per channel (the loader's normalisation)")
        shape = (1, -1, 1, 1)
        return (torch.tensor(self.mean, dtype=x.dtype, device=x.device).reshape(shape),
                torch.tensor(self.std, dtype=x.dtype, device=x.device).reshape(shape))

    @staticmethod
    def _to_pixels(x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        return x if norm is None else x * norm[1] + norm[0]

    @staticmethod
    def _from_pixels(x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        return x if norm is None else (x - norm[0]) / norm[1]

    def _random_start(self, pixels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' random start: uniform in the ball, kept inside the pixel range; (perturbed pixels,
        the perturbation)."""
        bound = self.adv_eps / PIXEL_LEVELS
        generator = torch.Generator(device=pixels.device).manual_seed(seed)
        perturbed = (pixels + torch.zeros_like(pixels).uniform_(-bound, bound, generator=generator)).clamp(0, 1)
        return perturbed, perturbed - pixels

    def resolve(self, x: torch.Tensor, target: torch.Tensor, draw: Draw) -> Draw:
        draw = super().resolve(x, target, draw)
        if not isinstance(draw, PuzzleMixDraw):
            return draw
        norm = self._normalisation(x)
        pixels = self._to_pixels(x, norm)
        noise = None
        if any(draw.adversarial):
            perturbed, noise = self._random_start(pixels, draw.adv_seed)
            grad, _ = self.saliency_pass(self._from_pixels(perturbed, norm), target)
            bound = self.adv_eps / PIXEL_LEVELS
            noise = noise + (self.adv_eps + 2) / PIXEL_LEVELS * grad.sign()
            noise = draw.adv_scale * noise.clamp(-bound, bound)
        else:
            grad, _ = self.saliency_pass(x, target)
        saliency = saliency_map(grad)
        masks = self.cut(saliency, pixels, draw.partner, draw.block_num, draw.prior_lam)
        lam = masks.reshape(masks.shape[0], -1).mean(1, dtype=np.float64).astype(np.float32)
        return replace(draw, lam=lam, masks=masks, saliency=saliency, noise=noise)

    def cut(self, saliency: torch.Tensor, pixels: torch.Tensor, partner: np.ndarray, block_num: int,
            lam: float) -> np.ndarray:
        """The masks of every pair, (B, block_num, block_num) float32; 1 where a sample is its own partner."""
        block_size = saliency.shape[-1] // block_num
        own = normalised_block_saliency(saliency, block_size)
        index = to_device(partner, saliency.device)
        keep, take, vertical, horizontal = block_costs(own, own[index], pixels, pixels[index], block_num=block_num,
                                                       beta=self.beta, gamma=self.gamma, neigh_size=self.neigh_size)
        masks = np.ones((len(partner), block_num, block_num), dtype=np.float32)
        rows = [i for i in range(len(partner)) if partner[i] != i]  # an odd batch's middle is left unmixed
        jobs = [(keep[i], take[i], vertical[i], horizontal[i], lam) for i in rows]
        settings = dict(beta=self.beta, eta=self.eta, n_labels=self.n_labels)
        if self.mp and len(jobs) > 1:
            futures = [self._workers().submit(graph_cut_mask, *job, **settings) for job in jobs]
            results = [f.result() for f in futures]
        else:
            results = [graph_cut_mask(*job, **settings) for job in jobs]
        for i, mask in zip(rows, results, strict=True):
            masks[i] = mask
        return masks

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a forked child of a process holding CUDA (or threads) is unsafe.
            self._pool = ProcessPoolExecutor(self.mp, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    # -- the mix ------------------------------------------------------------------------------------
    def apply(self, x: torch.Tensor, target: torch.Tensor, draw: Draw, lam: Lam,
              partner: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(draw, PuzzleMixDraw):
            return x
        norm = self._normalisation(x)
        width = x.shape[-1]
        mask = to_device(draw.masks, x.device).to(torch.float32).unsqueeze(1)
        first, second = x, x[partner]
        if draw.noise is not None:  # the perturbation is added to the clean inputs before the transport
            if draw.adversarial[0]:
                first = self._from_pixels((self._to_pixels(first, norm) + draw.noise).clamp(0, 1), norm)
            if draw.adversarial[1]:
                second = self._from_pixels((self._to_pixels(second, norm) + draw.noise[partner]).clamp(0, 1), norm)
        if self.transport:
            block_size = width // draw.block_num
            cell = block_size if self.t_size == SAME_GRID else min(self.t_size, block_size)
            if cell < block_size:
                mask = F.interpolate(mask, size=width // cell)
            saliency = normalised_block_saliency(draw.saliency, cell)
            first = transport_blocks(first, transport_plan(mask, saliency, eps=self.t_eps))
            second = transport_blocks(second, transport_plan(1 - mask, saliency[partner], eps=self.t_eps))
        mask = F.interpolate(mask, size=width).to(x.dtype)
        mixed = mask * first + (1 - mask) * second
        alone = (partner == torch.arange(len(partner), device=partner.device)).reshape(-1, 1, 1, 1)
        return torch.where(alone, x, mixed)

    # -- lifetime -----------------------------------------------------------------------------------
    def remove(self) -> None:
        super().remove()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
