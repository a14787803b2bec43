"""PuzzleMix (Kim et al., "Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal Mixup", ICML 2020).

Each sample is mixed with its flip partner (timm's pairing) by a block mask over a ``block_num x block_num``
grid: the mask level of every block (one of ``n_labels`` levels in [0, 1]) minimises, by a graph cut
(gco's alpha-beta swap, ``gco-wrapper``; its alpha-expansion aborted the process on some
contract-suite inputs here, so swap is used as Co-Mixup does), the paper's objective: the saliency each input keeps (unary), a
prior pulling the mask's mean towards the drawn lam (``eta``), and a smoothness term between neighbouring
blocks (``beta``). The saliency is the root mean square over channels of the loss gradient on the clean
batch (``mixkit.mix.saliency``: a second forward/backward per step), normalised per image and pooled to the
grid. lam is the mask's mean per sample. The graph cut runs on the host: one device-to-host copy of the
block saliency per step.

Not yet built (PARTIAL, see docs/mixing.md): the block transport step, the ``gamma`` data term between
neighbouring blocks, the adversarial input perturbation and the clean-input loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .base import Draw, MixupBase
from .comixup_solver import block_saliency, saliency_map
from .rng import randint
from .saliency import input_gradient
from .targets import Lam, to_device

__all__ = ["PuzzleMix", "PuzzleMixDraw"]

BLOCK_CHOICES = (1, 2, 4, 8, 16)  # the authors' CIFAR draw of the grid side, one per batch
SCALE = 1000.0  # gco takes integer-valued energies: costs are scaled before the cut


@dataclass(frozen=True, eq=False)
class PuzzleMixDraw(Draw):
    """A PuzzleMix call: the grid side, and after ``resolve`` the (B, block_num, block_num) masks applied.

    Attributes:
        block_num: The grid is ``block_num x block_num`` blocks.
        masks: Per sample, the weight of the sample itself in every block (None before ``resolve``).
    """

    block_num: int = 0
    masks: np.ndarray | None = None


def _flip(batch_size: int) -> np.ndarray:
    return np.arange(batch_size)[::-1].copy()


def graph_cut_mask(own: np.ndarray, other: np.ndarray, lam: float, *, n_labels: int, beta: float,
                   eta: float) -> np.ndarray:
    """The mask levels of one sample's blocks by gco's alpha-beta swap.

    Args:
        own: (n, n) normalised block saliency of the sample (each grid sums to 1).
        other: (n, n) that of its partner.
        lam: The drawn mixing ratio the mask's mean is pulled towards.
        n_labels: Number of mask levels, ``linspace(0, 1, n_labels)``.
        beta: Weight of the smoothness between neighbouring blocks (absolute level difference).
        eta: Weight of the prior on the mask's mean.

    Returns:
        (n, n) float32 mask: the weight of the sample itself in every block.
    """
    import gco  # gco-wrapper: imported here so that mixkit imports without it

    levels = np.linspace(0.0, 1.0, n_labels)
    # Unary: the saliency each level throws away, plus a prior -log of a binomial around lam (the paper's
    # prior on the mixing ratio; written here because no library states PuzzleMix's energy).
    lost = (1.0 - levels)[None, None, :] * own[..., None] + levels[None, None, :] * other[..., None]
    ks = np.arange(n_labels)
    lam = float(np.clip(lam, 1e-6, 1 - 1e-6))
    log_binom = (np.log(np.array([float(math.comb(n_labels - 1, k)) for k in ks]))
                 + ks * np.log(lam) + (n_labels - 1 - ks) * np.log(1 - lam))
    unary = lost - eta * log_binom[None, None, :] / own.size
    if beta == 0 or own.size == 1:  # no smoothness or no neighbours: blocks are independent (gco refuses both)
        return levels[unary.argmin(-1)].astype(np.float32)
    pairwise = beta * np.abs(levels[:, None] - levels[None, :]) / own.size
    labels = gco.cut_grid_graph_simple(np.ascontiguousarray(np.rint(unary * SCALE), dtype=np.int32),
                                       np.ascontiguousarray(np.rint(pairwise * SCALE), dtype=np.int32),
                                       connect=4, algorithm="swap")
    return levels[np.asarray(labels).reshape(own.shape)].astype(np.float32)


class PuzzleMix(MixupBase):
    """PuzzleMix: saliency-guided block masks by graph cuts (see the module docstring).

    Args:
        block_num: Side of the block grid; -1 draws it from 1, 2, 4, 8, 16 per batch (the authors' CIFAR),
            among those that fit the image.
        n_labels: Number of mask levels (the authors' 3).
        beta: Smoothness coefficient of the mask (the authors' 1.2).
        eta: Coefficient of the prior on lam (the authors' 0.2).
        **kwargs: ``MixupBase``'s arguments; ``mixup_alpha`` (default 1.0) draws lam. CutMix is refused and
            ``mode`` must be 'batch' (one lam per batch, as the authors').
    """

    method = "puzzlemix"
    default_mixup_alpha = 1.0
    supports_cutmix = False
    needs_model = True
    uses_model_gradient = True

    def __init__(self, *, block_num: int = -1, n_labels: int = 3, beta: float = 1.2, eta: float = 0.2,
                 **kwargs) -> None:
        if kwargs.get("mode", "batch") != "batch":
            raise ValueError(f"puzzlemix draws one lam per batch: use mode='batch' (--mixup-mode batch), "
                             f"got mode={kwargs['mode']!r}")
        if kwargs.get("pairing", "flip") != "flip":
            raise ValueError("puzzlemix pairs each sample with its flip partner: leave pairing unset")
        super().__init__(**kwargs)
        if block_num != -1 and (isinstance(block_num, bool) or not isinstance(block_num, int) or block_num < 1):
            raise ValueError(f"block_num must be an int >= 1 (the grid side) or -1 (drawn from {BLOCK_CHOICES} "
                             f"per batch), got {block_num!r}")
        if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 2:
            raise ValueError(f"n_labels must be an int >= 2 (mask levels), got {n_labels!r}")
        for name, value in (("beta", beta), ("eta", eta)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.block_num = block_num
        self.n_labels = n_labels
        self.beta = beta
        self.eta = eta
        try:
            import gco  # noqa: F401
        except ImportError as err:
            raise ImportError("puzzlemix's graph cuts need gco-wrapper, a mixkit dependency: "
                              "pip install gco-wrapper") from err

    def _check_grid(self, x: torch.Tensor) -> None:
        height, width = x.shape[-2:]
        largest = self.block_num  # block_num=-1 draws only the grids that fit (1 always does)
        if min(height, width) < largest:
            raise ValueError(f"puzzlemix: a grid of {largest} x {largest} blocks does not fit {height} x {width} "
                             f"images (at least one pixel per block): pass block_num <= {min(height, width)} "
                             f"(--mixup-kwargs block_num=...) or larger images")

    def draw(self, x: torch.Tensor) -> Draw:
        self._check_grid(x)
        lam, _ = self._draw_lam(None)
        if lam == 1.0 or x.shape[0] < 2:
            return Draw()
        block_num = self.block_num
        if block_num == -1:
            fits = [n for n in BLOCK_CHOICES if n <= min(x.shape[-2:])]
            block_num = fits[randint(len(fits))]
        return PuzzleMixDraw(branch="input", layer="input", lam=lam, partner=_flip(x.shape[0]), block_num=block_num)

    def resolve(self, x: torch.Tensor, target: torch.Tensor, draw: Draw) -> Draw:
        if not isinstance(draw, PuzzleMixDraw):
            return draw
        loss_fn = F.binary_cross_entropy_with_logits if self.multi_label else None
        grad, _ = input_gradient(self.model, x, target.float() if self.multi_label else target, loss_fn=loss_fn)
        saliency = saliency_map(grad)
        saliency = saliency / saliency.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
        blocks = block_saliency(saliency, draw.block_num).cpu().double().numpy()  # graph cuts run on the host
        partner = draw.partner
        masks = np.stack([graph_cut_mask(blocks[i], blocks[partner[i]], draw.lam, n_labels=self.n_labels,
                                         beta=self.beta, eta=self.eta) for i in range(x.shape[0])])
        batch = x.shape[0]
        rows = np.arange(batch)
        masks[rows == partner] = 1.0  # the middle of an odd batch is its own partner: left unmixed
        own = masks.reshape(batch, -1).mean(1)
        weights = np.zeros((batch, batch), dtype=np.float32)
        weights[rows, rows] += own
        weights[rows, partner] += 1.0 - own
        return replace(draw, masks=masks, weights=weights)

    def apply(self, x: torch.Tensor, target: torch.Tensor, draw: Draw, lam: Lam,
              partner: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(draw, PuzzleMixDraw):
            return x
        mask = to_device(draw.masks, x.device).to(x.dtype).unsqueeze(1)
        mask = F.interpolate(mask, size=x.shape[-2:], mode="nearest")
        return mask * x + (1 - mask) * x[partner]
