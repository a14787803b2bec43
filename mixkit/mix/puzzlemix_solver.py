"""PuzzleMix's optimisation (Kim et al., "Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal
Mixup", ICML 2020) for a batch of pairs: the mixing mask by graph cuts, then the transport of blocks.

For each sample and its partner, over a ``block_num x block_num`` grid of square blocks:

* the mask level of every block (``n_labels`` levels: ``1 - i / (n_labels - 1)``, the weight of the sample
  itself) minimises the saliency the mix throws away (the block saliency of the input the level drops,
  normalised per image), a prior pulling the mask towards the drawn lam (``eta`` times the negative log of
  the binomial probability of the level), a label smoothness between neighbouring blocks (``beta`` times
  the squared level difference) and a data smoothness (``gamma``: the mean absolute pixel difference across
  the boundary of two neighbouring blocks for each choice of their sources, split into unary terms and an
  edge weight as the paper's submodular approximation does). Solved by gco's alpha-beta swap (gco-wrapper,
  the package the authors use).
* the transport: each input's blocks are moved inside its own image to where the mask keeps it, by the
  paper's Algorithm 1 (an assignment from the cost ``t_eps * distance - saliency * kept``, resolved by
  repeatedly letting the cheapest row win each column; ``side`` rounds), at the grid of ``t_size`` pixels.

All coefficients are per block (divided by the number of blocks; ``beta`` by ``16 * block_num``), as in the
authors' code, so that the defaults mean what theirs do. Where the authors' code (snu-mllab/PuzzleMix,
``mixup.py``) fixes a numerical detail, mixkit follows it so that the masks are the authors'
(tests/golden/puzzlemix.npz): the energies are truncated to integers at ``1000 * block_num ** 2`` per unit,
and gco gets int32 unary and edge costs with a float label distance (its float mode). The energy
and the transport are written here because no library has them (gco does the cut).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "block_costs",
    "fitting_grids",
    "graph_cut_mask",
    "label_prior",
    "normalised_block_saliency",
    "transport_blocks",
    "transport_cost",
    "transport_plan",
]

PRIOR_EPS = 1e-8  # the authors' floor inside the prior's log
ENERGY_SCALE = 1000  # per unit of energy and per block: gco takes integer costs (the authors' large_val)
BETA_SCALE = 16  # the authors' beta / block_num / 16


def normalised_block_saliency(saliency: torch.Tensor, block_size: int) -> torch.Tensor:
    """The mean saliency of each ``block_size`` block, each image's grid summing to 1, (B, n, n)."""
    pooled = F.avg_pool2d(saliency, block_size)
    return pooled / pooled.reshape(pooled.shape[0], -1).sum(1).reshape(-1, 1, 1)


def _boundary_costs(pooled_a: torch.Tensor, pooled_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean absolute difference across each block boundary when the first block (upper / left) comes from
    ``a`` and the second from ``b``: ((B, n-1, n) vertical, (B, n, n-1) horizontal). The inputs are pooled at
    ``neigh_size``, ``k`` pooled cells per block side; the boundary strips are the last cells of one block and
    the first of the next, averaged along the boundary."""
    vertical = pooled_a[:, :, k - 1:-1:k, :] - pooled_b[:, :, k::k, :]
    horizontal = pooled_a[:, :, :, k - 1:-1:k] - pooled_b[:, :, :, k::k]
    vertical = F.avg_pool2d(vertical.abs().mean(1), kernel_size=(1, k))
    horizontal = F.avg_pool2d(horizontal.abs().mean(1), kernel_size=(k, 1))
    return vertical, horizontal


def block_costs(own_saliency: torch.Tensor, partner_saliency: torch.Tensor, own: torch.Tensor,
                partner: torch.Tensor, *, block_num: int, beta: float, gamma: float,
                neigh_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The graph's costs for every pair, on the host.

    Args:
        own_saliency: (B, n, n) normalised block saliency of each sample (``normalised_block_saliency``).
        partner_saliency: That of its partner.
        own: (B, C, H, W) the samples in pixel scale (what the data smoothness compares).
        partner: Their partners, likewise.
        block_num: The grid side ``n``.
        beta: The label smoothness coefficient (before the per-block scaling).
        gamma: The data smoothness coefficient.
        neigh_size: Side, in pixels, of the cells compared across a boundary (at most the block size).

    Returns:
        ``(keep, take, vertical, horizontal)`` float32 arrays: per block the cost of keeping the sample
        (mask 1: the partner's saliency is lost) and of taking the partner (mask 0), (B, n, n) each; the edge
        weights of the data smoothness between vertical (B, n-1, n) and horizontal (B, n, n-1) neighbours.
    """
    batch_size = own.shape[0]
    block_size = own.shape[-1] // block_num
    neigh_size = min(neigh_size, block_size)
    k = block_size // neigh_size
    scale = beta / block_num / BETA_SCALE * gamma
    pooled = {"own": F.avg_pool2d(own, neigh_size), "partner": F.avg_pool2d(partner, neigh_size)}
    costs = {}  # (first source, second source) -> (vertical, horizontal) boundary costs
    for first in ("own", "partner"):
        for second in ("own", "partner"):
            vertical, horizontal = _boundary_costs(pooled[first], pooled[second], k)
            costs[first, second] = (scale * vertical, scale * horizontal)
    keep = partner_saliency.clone()
    take = own_saliency.clone()
    # The paper's split of each boundary's 2 x 2 cost table: every node gets the mean over its neighbour's
    # two sources as a unary term (the same order of additions as the authors', so the floats are theirs).
    for axis in (0, 1):
        first_nodes = (slice(None), slice(None, -1), slice(None)) if axis == 0 else (
            slice(None), slice(None), slice(None, -1))
        second_nodes = (slice(None), slice(1, None), slice(None)) if axis == 0 else (
            slice(None), slice(None), slice(1, None))
        c = {key: value[axis] for key, value in costs.items()}
        keep[first_nodes] += (c["own", "partner"] + c["own", "own"]) / 2.0
        take[first_nodes] += (c["partner", "own"] + c["partner", "partner"]) / 2.0
        keep[second_nodes] += (c["partner", "own"] + c["own", "own"]) / 2.0
        take[second_nodes] += (c["own", "partner"] + c["partner", "partner"]) / 2.0
    edges = []
    for axis in (0, 1):
        c = {key: value[axis] for key, value in costs.items()}
        edges.append((c["own", "partner"] + c["partner", "own"] - c["own", "own"] - c["partner", "partner"]) / 2)
    host = [t.detach().float().cpu().numpy() for t in (keep, take, *edges)]
    assert host[0].shape == (batch_size, block_num, block_num)
    return host[0], host[1], host[2], host[3]


def label_prior(lam: float, n_labels: int, eta: float, n_blocks: int) -> np.ndarray:
    """The prior of every mask level (level ``i`` keeps ``1 - i / (n_labels - 1)`` of the sample), per block:
    ``eta`` times the negative log of the binomial probability of the level when each of ``n_labels - 1``
    draws keeps the sample with probability ``lam``."""
    ks = range(n_labels)
    probability = np.array([math.comb(n_labels - 1, i) * lam ** (n_labels - 1 - i) * (1 - lam) ** i for i in ks])
    return eta * -np.log(probability + PRIOR_EPS) / n_blocks


@functools.cache
def _label_distance(n_labels: int) -> np.ndarray:
    levels = np.arange(n_labels)
    return ((levels[:, None] - levels[None, :]) ** 2 / (n_labels - 1) ** 2).astype(np.float32)


def graph_cut_mask(keep: np.ndarray, take: np.ndarray, vertical: np.ndarray, horizontal: np.ndarray, lam: float,
                   *, beta: float, eta: float, n_labels: int) -> np.ndarray:
    """The mask of one pair by gco's alpha-beta swap.

    Args:
        keep: (n, n) cost of keeping the sample in each block (``block_costs``).
        take: (n, n) cost of taking the partner.
        vertical: (n-1, n) data smoothness weights between vertical neighbours.
        horizontal: (n, n-1) those between horizontal neighbours.
        lam: The drawn mixing ratio (the prior's).
        beta: The label smoothness coefficient (before the per-block scaling).
        eta: The prior's coefficient.
        n_labels: The number of mask levels.

    Returns:
        (n, n) float64 mask, the weight of the sample itself in every block.
    """
    import gco  # gco-wrapper: imported here so that mixkit imports without it

    block_num = keep.shape[0]
    scale = ENERGY_SCALE * block_num ** 2
    prior = label_prior(lam, n_labels, eta, block_num ** 2)
    levels = np.linspace(0, 1, n_labels)  # the partner's share of each level
    unary = np.stack([(1 - share) * keep.astype(np.float64) + share * take.astype(np.float64) + prior[i]
                      for i, share in enumerate(levels)], axis=-1)
    unary = (scale * unary).astype(np.int32)  # truncated, as the authors'
    smooth = np.float32(beta / block_num / BETA_SCALE)
    weight_v = (np.float32(scale) * (vertical.astype(np.float32) + smooth)).astype(np.int32)
    weight_h = (np.float32(scale) * (horizontal.astype(np.float32) + smooth)).astype(np.int32)
    labels = gco.cut_grid_graph(unary, _label_distance(n_labels), weight_v, weight_h, algorithm="swap")
    return 1.0 - np.asarray(labels).reshape(block_num, block_num) / (n_labels - 1)


@functools.cache
def _grid_distance(side: int) -> torch.Tensor:
    rows, cols = np.divmod(np.arange(side * side), side)
    distance = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    return torch.from_numpy((distance / (side - 1) ** 2).astype(np.float32))


def transport_cost(side: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Squared distance between the blocks of a ``side x side`` grid, over ``(side - 1) ** 2``,
    (side**2, side**2) float32 (block ``r * side + c``)."""
    return _grid_distance(side).to(device)


def transport_plan(mask: torch.Tensor, saliency: torch.Tensor, *, eps: float) -> torch.Tensor:
    """The paper's masked transport (Algorithm 1) of every image's blocks, (B, n*n, n*n) 0/1 float.

    Args:
        mask: (B, 1, n, n) the weight of the image in each block of the mix (> 0: the image shows there).
        saliency: (B, n, n) its normalised block saliency.
        eps: The weight of the transport distance (``t_eps``).

    Returns:
        ``plan[b, i, j] = 1`` when block ``i`` of image ``b`` moves to block ``j``; a destination nobody wins
        stays empty (zero), as in the authors' code.

    The authors' dense rounds, each resolved from the rows' choices (``_contest``) instead of three more
    (B, n*n, n*n) matrices: the same plans, ties included (tests/test_mix_puzzlemix.py), about 4 times faster.
    """
    side = mask.shape[-1]
    cells = side * side
    shown = (mask > 0).float()
    cost = eps * transport_cost(side, mask.device) - saliency.reshape(-1, cells, 1) * shown.reshape(-1, 1, cells)
    batch_size = cost.shape[0]
    rows = torch.arange(cells, device=cost.device).expand(batch_size, cells)
    none = torch.full((batch_size, cells), cells, device=cost.device)
    for _ in range(side):  # the authors' number of rounds
        choice = cost.min(-1).indices  # every row's cheapest column (the authors' op, so ties break alike)
        value = cost.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
        won = _contest(choice, value, rows, none)
        # A row that lost its column pays 1 more there next round.
        cost.scatter_add_(-1, choice.unsqueeze(-1), (~won).to(cost.dtype).unsqueeze(-1))
    return torch.zeros_like(cost).scatter_(-1, choice.unsqueeze(-1), won.to(cost.dtype).unsqueeze(-1))


def _contest(choice: torch.Tensor, value: torch.Tensor, rows: torch.Tensor, none: torch.Tensor) -> torch.Tensor:
    """Which rows win the column they chose, (B, cells) bool: the authors' ``(plan * cost).min(-2)`` without
    the dense matrix. Column ``j`` holds the chosen costs of the rows that chose it and 0 for every other row;
    its first row at the minimum wins, and that row holds the column only if it chose ``j``."""
    inf = torch.full_like(value, float("inf"))
    best = inf.scatter_reduce(-1, choice, value, "amin")  # the lowest chosen cost per column (inf: nobody)
    at_best = value == best.gather(-1, choice)
    first_in = none.scatter_reduce(-1, choice, torch.where(at_best, rows, none), "amin")  # first chooser at it
    # The first row that did not choose the column: row 0, except for row 0's own column.
    differs = choice != choice[:, :1]
    first_other = torch.where(differs.any(-1), differs.int().argmax(-1), none[:, 0])
    first_not = torch.zeros_like(none).scatter_(-1, choice[:, :1], first_other.unsqueeze(-1))
    column_won = (best < 0) | ((best == 0) & (first_in < first_not)) | ((best > 0) & (best < inf) &
                                                                      (first_not == none))
    return column_won.gather(-1, choice) & (first_in.gather(-1, choice) == rows)


def transport_blocks(images: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """Moves the square blocks of each image as ``plan`` (``transport_plan``) says: block ``j`` of the result
    is ``sum_i plan[i, j] * block_i``, i.e. the block that won ``j``, or zeros where none did.

    A gather rather than the authors' matmul with the 0/1 plan: the same values (each destination has at most
    one source), in the images' dtype also under autocast, without the matmul's cost.
    """
    batch_size, channels, height, width = images.shape
    cells = plan.shape[-1]
    side = math.isqrt(cells)
    size = height // side
    blocks = images.reshape(batch_size, channels, side, size, side, size).permute(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(batch_size, channels, cells, size, size)
    source = plan.argmax(1)  # (B, cells): the row that won each destination
    index = source.reshape(batch_size, 1, cells, 1, 1).expand(-1, channels, -1, size, size)
    moved = blocks.gather(2, index)
    filled = (plan.sum(1) > 0).reshape(batch_size, 1, cells, 1, 1)
    moved = torch.where(filled, moved, torch.zeros((), dtype=images.dtype, device=images.device))
    moved = moved.reshape(batch_size, channels, side, side, size, size).permute(0, 1, 2, 4, 3, 5)
    return moved.reshape(batch_size, channels, height, width)


def fitting_grids(size: int, choices: Sequence[int], neigh_size: int, t_size: int) -> list[int]:
    """The grid sides of ``choices`` that split a ``size`` square image into equal blocks whose side the
    neighbourhood (``neigh_size``, capped at the block) and the transport cell (``t_size``) divide."""
    fits = []
    for n in choices:
        if n < 2 or size % n:
            continue
        block = size // n
        if block % min(neigh_size, block):
            continue
        if t_size > 0 and block % min(t_size, block):
            continue
        fits.append(n)
    return fits
