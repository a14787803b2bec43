"""Co-Mixup's optimisation (Kim et al., "Co-Mixup: Saliency Guided Joint Mixup with Supermodular Diversity",
ICLR 2021): which input fills each block of each output, for one partition of the batch.

Every output is a labeling of a ``block_num x block_num`` grid by the inputs of its partition. The objective
over all outputs at once is, with block saliency ``s`` normalised per input and ``o_jk`` the number of blocks
of output ``j`` taken from input ``k``:

* the unary term ``-s_k(b) - eta * log(prior_k)`` for every block ``b`` labelled ``k`` (salient blocks are
  kept; ``prior`` is one Dirichlet(mixup_alpha) draw per partition, the paper's mixing-ratio prior);
* ``beta`` times the Potts smoothness of each labeling (neighbouring blocks from different inputs);
* the supermodular diversity term ``gamma * sum_k sum_{j != j'} o_jk o_j'k``, weighted between inputs by
  the compatibility matrix ``A`` and thresholded at ``tau`` (an input is penalised only once it is used
  beyond ``tau`` blocks by the other outputs).

The paper minimises it by block-coordinate descent: output after output, the supermodular term is
replaced by its modular approximation given the other outputs, and the remaining submodular problem (unary
plus Potts) is solved by a graph cut (alpha-beta swap). From the second sweep on, an output that already
mixes two or more inputs may also use half-half labels of (up to three of) them. Before the last sweep,
outputs that use exactly the same set of inputs are pushed apart (``set_resolve``). All coefficients are
per block (divided by the number of blocks), as in the authors' code.

The graph cut is gco's (``gco-wrapper``, the package the authors use); the sweep around it, the modular
approximation, the multi-label extension and the resolution of identical outputs are written here because no
library has them. Where the authors' code (snu-mllab/Co-Mixup, ``match.py``) computes something other than a
plain reading of the paper, mixkit follows the code so that its masks are the authors' (tests/golden): the
hard threshold weights each column ``c`` of ``A`` by ``[(A p)_c > tau]`` (``(mask * A) @ p`` by Python's
operator precedence) rather than each row.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "THRESHOLD_TYPES",
    "assign_blocks",
    "block_saliency",
    "compatibility",
    "label_weights",
    "mix_blocks",
    "peak_distance",
    "saliency_map",
]

THRESHOLD_TYPES = ("hard", "soft")
PEAK_WINDOW = 8  # the authors' window for the most salient location (CIFAR / Tiny-ImageNet main.py)
HALF_LABEL_DISCOUNT = 5e-4  # the authors' small bonus that lets a half-half label win a tie
HALF_LABEL_PAIRWISE = 0.25  # Potts cost between a half-half label and either of its two inputs
CONVERGED = 1e-6  # relative change of the objective at which the sweeps stop


def saliency_map(grad: torch.Tensor) -> torch.Tensor:
    """The authors' saliency: the root mean square of the input gradient over channels, (B, H, W) float32."""
    return grad.float().square().mean(1).sqrt()


def block_saliency(saliency: torch.Tensor, block_num: int) -> torch.Tensor:
    """Mean saliency of every block of a ``block_num x block_num`` grid, (B, n, n).

    The authors' ``avg_pool2d(saliency, H // n)`` where the image side is a multiple of ``n``; an adaptive
    pooling otherwise, so every pixel counts in some block.
    """
    return F.adaptive_avg_pool2d(saliency, block_num)


def peak_distance(saliency: torch.Tensor) -> torch.Tensor:
    """The L1 distance (in pixels) between the most salient locations of every pair of inputs, (B, B).

    The location is the arg-max of the saliency averaged over a sliding ``PEAK_WINDOW`` window (the
    authors' compatibility measure; a smaller window on images smaller than it).
    """
    height, width = saliency.shape[-2:]
    window = min(PEAK_WINDOW, height, width)
    pooled = F.avg_pool2d(saliency.unsqueeze(1), kernel_size=window, stride=1).flatten(1)
    peak = pooled.argmax(1)
    pooled_width = width - window + 1
    rows, cols = peak // pooled_width, peak % pooled_width
    position = torch.stack([rows, cols], 1).float()
    return (position.unsqueeze(1) - position.unsqueeze(0)).abs().sum(-1)


def compatibility(distance: torch.Tensor, omega: float) -> torch.Tensor:
    """The compatibility matrix of one partition: ``(1 - omega) I + omega * D / sum(D) * n``.

    Inputs whose salient regions lie far apart are more compatible (mixing them keeps both). Where every
    distance is 0 (all peaks at one place, or a single input) the authors' normalisation divides by zero;
    here the matrix is then the identity (no input is more compatible than another).
    """
    n = distance.shape[0]
    eye = torch.eye(n, dtype=torch.float32)
    total = distance.sum()
    if not total > 0:
        return eye
    return (1 - omega) * eye + omega * (distance.float() / total * n)


def _one_hot(labels: torch.Tensor, count: int) -> torch.Tensor:
    return F.one_hot(labels.long(), count).float()


def _objective(cost: torch.Tensor, masks: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """The joint objective without the threshold (what the sweeps watch for convergence)."""
    unary = (masks * cost.permute(1, 2, 0)).sum()
    smooth = masks.diff(dim=1).square().sum() + masks.diff(dim=2).square().sum()
    counts = masks.sum((1, 2))
    diversity = counts.sum(0).square().sum() - counts.square().sum()
    return unary + beta / 2 * smooth + gamma * diversity


def _modular_penalty(compat: torch.Tensor, others: torch.Tensor, thres: float, thres_type: str,
                     gamma: float) -> torch.Tensor:
    """The modular approximation of the diversity term for one output, given the other outputs' counts."""
    weighted = compat @ others
    over = (weighted > thres).float()
    if thres_type == "hard":  # the authors' (mask * A) @ p: see the module docstring
        return 2 * gamma * ((over * compat) @ others)
    return 2 * gamma * (over * (weighted - thres))


def _half_labels(counts: torch.Tensor, extend: bool) -> tuple[torch.Tensor, np.ndarray]:
    """The half-half labels one output may use besides the n inputs, as (E, n) weights, and the Potts costs
    between all n + E labels.

    None (E = 0) unless ``extend`` and the output already mixes two or more inputs: then the half-half label
    of its two inputs, or those of the pairs of its three most used ones (in index order).
    """
    n = counts.shape[0]
    used = torch.nonzero(counts > 0).flatten()
    if not extend or len(used) < 2:
        return torch.zeros(0, n), (1 - np.eye(n)).astype(np.float32)
    if len(used) > 2:
        used = torch.topk(counts, k=3).indices.sort().values
    pairs = [(int(used[a]), int(used[b])) for a in range(len(used)) for b in range(a + 1, len(used))]
    halves = torch.zeros(len(pairs), n)
    pairwise = np.ones((n + len(pairs), n + len(pairs)), dtype=np.float32)
    np.fill_diagonal(pairwise, 0.0)
    for e, (a, b) in enumerate(pairs):
        halves[e, [a, b]] = 0.5
        pairwise[n + e, [a, b]] = pairwise[[a, b], n + e] = HALF_LABEL_PAIRWISE
    return halves, pairwise


def _cut(unary: torch.Tensor, pairwise: np.ndarray, beta: float) -> np.ndarray:
    """gco's alpha-beta swap on the block grid: (h, w, L) unary costs, Potts edges of weight ``beta``."""
    import gco  # gco-wrapper: imported here so that mixkit imports without it

    height, width, _ = unary.shape
    edges_v = np.full((height - 1, width), beta, dtype=np.float32)
    edges_h = np.full((height, width - 1), beta, dtype=np.float32)
    unary_np = np.ascontiguousarray(unary.numpy(), dtype=np.float32)
    return gco.cut_grid_graph(unary_np, pairwise, edges_v, edges_h, algorithm="swap")


def _solve_output(cost: torch.Tensor, counts: torch.Tensor, beta: float, extend: bool) -> torch.Tensor:
    """The best labeling of one output for the (h, w, n) block costs: an (h, w, n) soft mask."""
    height, width, n = cost.shape
    halves, pairwise = _half_labels(counts, extend)
    unary = torch.cat([cost, cost @ halves.T - HALF_LABEL_DISCOUNT], -1)
    chosen = torch.from_numpy(np.asarray(_cut(unary, pairwise, beta), dtype=np.int64))
    masks = _one_hot(chosen, n + len(halves))
    return (masks[:, :n] + masks[:, n:] @ halves).reshape(height, width, n)


def _identical_outputs_cost(masks: torch.Tensor) -> torch.Tensor:
    """``set_resolve``: for every pair of outputs mixing the same set of inputs, an extra unit cost on the
    first of those inputs in the first output and on the second in the other, (n_out, n)."""
    used = masks.sum((1, 2)) > 0
    extra = torch.zeros(used.shape)
    n_out = used.shape[0]
    for first in range(n_out):
        for second in range(first + 1, n_out):
            inputs = torch.nonzero(used[first]).flatten()
            if len(inputs) > 1 and torch.equal(used[first], used[second]):
                extra[first, inputs[0]] = 1.0
                extra[second, inputs[1]] = 1.0
    return extra


def assign_blocks(
    saliency: torch.Tensor,
    compat: torch.Tensor,
    prior: np.ndarray,
    init: np.ndarray,
    *,
    beta: float = 0.32,
    gamma: float = 1.0,
    eta: float = 0.05,
    thres: float = 0.83,
    thres_type: str = "hard",
    set_resolve: bool = True,
    niter: int = 4,
) -> torch.Tensor:
    """Co-Mixup's masks for one partition: which input fills each block of each output.

    Args:
        saliency: (n, h, w) block saliency of the partition's inputs (``block_saliency``), on the host.
        compat: (n, n) compatibility matrix (``compatibility``).
        prior: (n,) Dirichlet draw, the mixing-ratio prior.
        init: (n_out, h, w) integer labels in [0, n), the random initial labeling.
        beta: Smoothness (Potts) coefficient (``m_beta``).
        gamma: Diversity coefficient (``m_gamma``).
        eta: Prior coefficient (``m_eta``).
        thres: Diversity threshold tau as a fraction of the grid (``m_thres``).
        thres_type: 'hard' (penalise the whole count past tau) or 'soft' (only what exceeds tau).
        niter: Number of sweeps over the outputs (``m_niter``); fewer when the objective stops changing.
        set_resolve: Push apart outputs that mix the same set of inputs, before the last sweep.

    Returns:
        (n_out, h, w, n) float32 masks: each block's weights over the inputs (one-hot, or 0.5 / 0.5).
    """
    n, height, width = saliency.shape
    blocks = height * width
    thres, beta, gamma, eta = thres * blocks, beta / blocks, gamma / blocks, eta / blocks
    totals = saliency.reshape(n, -1).sum(1)
    totals = torch.where(totals > 0, totals, torch.ones_like(totals))  # no gradient at all: zero saliency
    cost = -(saliency / totals.reshape(n, 1, 1)).float()
    cost = cost - eta * torch.log(torch.as_tensor(prior, dtype=torch.float32).reshape(n, 1, 1) + 1e-8)
    masks = _one_hot(torch.as_tensor(init), n)
    previous = _objective(cost, masks, beta, gamma)
    used = masks.sum((0, 1, 2))
    extra = None
    for sweep in range(niter):
        for out in range(masks.shape[0]):
            counts = masks[out].sum((0, 1))
            used = used - counts
            block_cost = cost + _modular_penalty(compat, used, thres, thres_type, gamma).reshape(n, 1, 1)
            if extra is not None:
                block_cost = block_cost + gamma * extra[out].reshape(n, 1, 1)
            masks[out] = _solve_output(block_cost.permute(1, 2, 0), counts, beta, extend=sweep > 0)
            used = used + masks[out].sum((0, 1))
        if set_resolve and sweep == niter - 2:
            extra = _identical_outputs_cost(masks)
        value = _objective(cost, masks, beta, gamma)
        if (previous - value).abs() / value.abs() < CONVERGED:
            break
        previous = value
    return masks


def label_weights(masks: torch.Tensor) -> torch.Tensor:
    """Each output's share of every input, (n_out, n): the weights of the inputs' labels in its target."""
    shares = masks.sum((1, 2))
    return shares / shares.sum(1, keepdim=True)


def mix_blocks(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The outputs: every block of every output from the input(s) its mask names, (n_out, C, H, W).

    The (n_out, h, w, n) masks are scaled to the image by nearest-neighbour interpolation, as the authors'.
    The sum runs in ``x``'s dtype with autocast off: it selects pixels (weights 0, 0.5, 1), which a bf16
    autocast would round.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        weights = masks.to(device=x.device, dtype=x.dtype).permute(0, 3, 1, 2)
        weights = F.interpolate(weights, size=x.shape[-2:], mode="nearest")
        return torch.einsum("oihw,ichw->ochw", weights, x)
