"""Co-Mixup (Kim et al., "Co-Mixup: Saliency Guided Joint Mixup with Supermodular Diversity", ICLR 2021).

Each output image is a block mosaic of several inputs of its partition (``m_part`` consecutive samples),
chosen jointly for all outputs: salient blocks kept, mosaics smooth, and each input spread over few outputs
(the supermodular diversity term), by the optimisation in ``comixup_solver``. The saliency is the loss
gradient on the clean batch (``mixkit.mix.saliency``: a second forward/backward per step), and the
target of an output is its inputs' labels weighted by their share of its blocks (the contract's label
``weights``). The defaults are the authors' (snu-mllab/Co-Mixup ``main.py``, CIFAR-100 PreActResNet-18),
their clean-input loss included: ``clean_lam=1`` adds the clean batch's cross-entropy to the loss
(``extra_loss``, logged as ``clean_loss``) from the saliency forward, run in training mode; with
``clean_lam=0`` the pass runs in eval mode and nothing is added, as theirs (their README: then lower
``mixup_alpha``).

The draw (NumPy's global generator): the grid size when ``m_block_num=-1``, then per partition the
Dirichlet prior and the random initial labeling; ``resolve`` runs the saliency pass and the optimisation
(graph cuts on the host: one device-to-host copy of the block saliency per step), ``apply`` builds the
mosaics on the batch's device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .base import Draw
from .checks import check_choice
from .comixup_solver import (
    THRESHOLD_TYPES,
    assign_blocks,
    block_saliency,
    compatibility,
    label_weights,
    mix_blocks,
    peak_distance,
    saliency_map,
)
from .rng import dirichlet, rand, randint
from .saliency import GradientSaliencyMixupBase
from .targets import Lam, to_device

__all__ = ["CoMixup", "CoMixupDraw"]

RANDOM_BLOCKS = -1
RANDOM_BLOCK_CHOICES = (2, 4, 8, 16)  # the authors' m_block_num=-1: 2 ** randint(1, 5)


@dataclass(frozen=True, eq=False)
class CoMixupDraw(Draw):
    """A Co-Mixup call: its random choices, and after ``resolve`` the masks it applied.

    Attributes:
        block_num: The grid is ``block_num x block_num`` blocks.
        groups: Sizes of the partitions (``m_part`` consecutive samples; the last may be smaller). A
            partition of one sample is left unmixed.
        priors: Per partition, the (n,) Dirichlet(mixup_alpha) prior (None for a partition of one).
        inits: Per partition, the (n, block_num, block_num) initial labeling (None for a partition of one).
        masks: Per partition, the (n, block_num, block_num, n) float32 masks (None before ``resolve`` and
            for a partition of one): output o's block (r, c) is ``sum_i masks[o, r, c, i] * x_i``.
    """

    block_num: int = 0
    groups: tuple[int, ...] = ()
    priors: tuple[np.ndarray | None, ...] = ()
    inits: tuple[np.ndarray | None, ...] = ()
    masks: tuple[np.ndarray | None, ...] | None = None


class CoMixup(GradientSaliencyMixupBase):
    """Co-Mixup: batch-level saliency-guided mixing of several inputs per output (see the module docstring).

    Args:
        m_block_num: Side of the block grid; -1 draws 2, 4, 8 or 16 per batch (the authors' option).
        m_part: Partition size: the batch is mixed in groups of this many consecutive samples.
        m_beta: Smoothness coefficient of the masks (the authors' range 0.16 to 0.48 for 4 blocks).
        m_gamma: Coefficient of the supermodular diversity term.
        m_thres: Diversity threshold tau, a fraction of the grid (the authors' range 0.81 to 0.86).
        m_thres_type: 'hard' or 'soft' thresholding of the diversity penalty.
        m_eta: Coefficient of the Dirichlet prior on the mixing ratios.
        m_omega: Weight of the input compatibility (distance between salient regions) in the diversity term.
        m_niter: Number of sweeps of the optimisation over the outputs.
        set_resolve: Push apart outputs that would mix the same set of inputs.
        **kwargs: ``GradientSaliencyMixupBase``'s ``clean_lam`` (default 1.0, the authors' in every script
            they publish) and ``MixupBase``'s arguments; ``mixup_alpha`` (default 2.0) is the Dirichlet
            prior's concentration. ``mode`` must be 'batch' (the mix is joint over the batch), CutMix is refused, and
            there is no ``pairing``: the optimisation decides which inputs each output mixes.
    """

    method = "comixup"
    default_mixup_alpha = 2.0
    supports_cutmix = False
    default_clean_lam = 1.0

    def __init__(
        self,
        *,
        m_block_num: int = 4,
        m_part: int = 20,
        m_beta: float = 0.32,
        m_gamma: float = 1.0,
        m_thres: float = 0.83,
        m_thres_type: str = "hard",
        m_eta: float = 0.05,
        m_omega: float = 0.001,
        m_niter: int = 4,
        set_resolve: bool = True,
        **kwargs,
    ) -> None:
        if kwargs.get("pairing", "flip") != "flip":
            raise ValueError("comixup takes no pairing: its optimisation decides which inputs each output mixes; "
                             "leave pairing unset")
        if kwargs.get("mode", "batch") != "batch":
            raise ValueError(f"comixup mixes the batch jointly, so it has no per-pair or per-element mode: use "
                             f"mode='batch' (--mixup-mode batch), got mode={kwargs['mode']!r}")
        super().__init__(**kwargs)
        self.pairing = "optimised"  # not a pairing: the odd-batch and pairing rules of timm do not apply
        if m_block_num != RANDOM_BLOCKS and (isinstance(m_block_num, bool) or not isinstance(m_block_num, int)
                                             or m_block_num < 2):
            raise ValueError(f"m_block_num must be an int >= 2 (the grid side) or -1 (drawn from "
                             f"{RANDOM_BLOCK_CHOICES} per batch), got {m_block_num!r}")
        if isinstance(m_part, bool) or not isinstance(m_part, int) or m_part < 2:
            raise ValueError(f"m_part (the partition size, the number of inputs mixed jointly) must be an int >= 2, "
                             f"got {m_part!r}")
        if isinstance(m_niter, bool) or not isinstance(m_niter, int) or m_niter < 1:
            raise ValueError(f"m_niter must be an int >= 1, got {m_niter!r}")
        for name, value in (("m_beta", m_beta), ("m_gamma", m_gamma), ("m_eta", m_eta)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0 <= m_omega <= 1:
            raise ValueError(f"m_omega must be in [0, 1] (a weight between identity and compatibility), got {m_omega!r}")
        if not m_thres >= 0:
            raise ValueError(f"m_thres must be >= 0 (a fraction of the grid), got {m_thres!r}")
        check_choice("m_thres_type", m_thres_type, THRESHOLD_TYPES)
        self.m_block_num = m_block_num
        self.m_part = m_part
        self.m_beta = m_beta
        self.m_gamma = m_gamma
        self.m_thres = m_thres
        self.m_thres_type = m_thres_type
        self.m_eta = m_eta
        self.m_omega = m_omega
        self.m_niter = m_niter
        self.set_resolve = bool(set_resolve)
        self._check_graph_cut()

    @staticmethod
    def _check_graph_cut() -> None:
        try:
            import gco  # noqa: F401
        except ImportError as err:
            raise ImportError("comixup's graph cuts need gco-wrapper, a mixkit dependency: "
                              "pip install gco-wrapper") from err

    def _check_grid(self, x: torch.Tensor) -> None:
        height, width = x.shape[-2:]
        largest = max(RANDOM_BLOCK_CHOICES) if self.m_block_num == RANDOM_BLOCKS else self.m_block_num
        if min(height, width) < largest:
            what = "m_block_num=-1 draws grids up to 16 x 16" if self.m_block_num == RANDOM_BLOCKS else \
                f"m_block_num={self.m_block_num} needs a grid of {largest} x {largest} blocks"
            raise ValueError(f"comixup: {what}, but the images are {height} x {width} pixels (at least one "
                             f"pixel per block): pass m_block_num <= {min(height, width)} (--mixup-kwargs "
                             f"m_block_num=...) or larger images")

    def draw(self, x: torch.Tensor) -> Draw:
        self._check_grid(x)
        if not (self.mixup_enabled and rand() < self.mix_prob):
            return Draw()
        block_num = self.m_block_num
        if block_num == RANDOM_BLOCKS:
            block_num = RANDOM_BLOCK_CHOICES[randint(len(RANDOM_BLOCK_CHOICES))]
        batch_size = x.shape[0]
        groups = tuple(min(self.m_part, batch_size - start) for start in range(0, batch_size, self.m_part))
        priors, inits = [], []
        for n in groups:
            mixed = n > 1  # one sample has nothing to mix with: left as it is
            priors.append(dirichlet(self.mixup_alpha, n) if mixed else None)
            inits.append(randint(n, (n, block_num, block_num)) if mixed else None)
        if not any(n > 1 for n in groups):
            return Draw()
        return CoMixupDraw(branch="input", layer="input", block_num=block_num, groups=groups, priors=tuple(priors),
                           inits=tuple(inits))

    def resolve(self, x: torch.Tensor, target: torch.Tensor, draw: Draw) -> Draw:
        draw = super().resolve(x, target, draw)
        if not isinstance(draw, CoMixupDraw):
            return draw
        grad, _ = self.saliency_pass(x, target)
        saliency = saliency_map(grad)
        blocks = block_saliency(saliency, draw.block_num).cpu()  # the graph cuts run on the host
        distance = peak_distance(saliency).cpu()
        weights = np.zeros((x.shape[0], x.shape[0]), dtype=np.float32)
        masks = []
        start = 0
        for n, prior, init in zip(draw.groups, draw.priors, draw.inits, strict=True):
            part = slice(start, start + n)
            start += n
            if prior is None:
                weights[part, part] = 1.0
                masks.append(None)
                continue
            mask = assign_blocks(blocks[part], compatibility(distance[part, part], self.m_omega), prior, init,
                                 beta=self.m_beta, gamma=self.m_gamma, eta=self.m_eta, thres=self.m_thres,
                                 thres_type=self.m_thres_type, set_resolve=self.set_resolve, niter=self.m_niter)
            weights[part, part] = label_weights(mask).numpy()
            masks.append(mask.numpy())
        return replace(draw, masks=tuple(masks), weights=weights)

    def apply(self, x: torch.Tensor, target: torch.Tensor, draw: Draw, lam: Lam,
              partner: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(draw, CoMixupDraw):
            return x
        parts, start = [], 0
        for n, mask in zip(draw.groups, draw.masks, strict=True):
            part = x[start:start + n]
            start += n
            parts.append(part if mask is None else mix_blocks(part, to_device(mask, x.device)))
        return torch.cat(parts)
