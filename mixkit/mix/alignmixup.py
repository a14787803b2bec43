"""AlignMixup (Venkataramanan et al., CVPR 2022): mix feature maps after aligning them with optimal transport.

Functional core ``align_mix_features`` and the stateful ``AlignMixup`` (timm's Mixup call contract).
Semantics follow the authors' code (shashankvkt/AlignMixup_CVPR22): per batch, with probability
``input_prob`` plain input mixup; otherwise, at the chosen layer, the partner's feature map is carried
onto the sample's spatial positions by an entropic OT plan (detached) and interpolated,
lam * a + (1 - lam) * aligned_b, or, 50/50 per batch, the reverse direction
lam * aligned_a + (1 - lam) * b; targets are lam * y_a + (1 - lam) * y_b in both cases.
Paper: https://arxiv.org/abs/2103.15375

mixkit's defaults differ from the authors' code in four places (a converged, scaled solver; the
barycentric projection; timm's flip pairing with one solve per flip pair; timm's label smoothing);
``create_mixup("alignmixup_paper")`` reproduces the authors' behaviour. docs/mixing.md tabulates why.

Token sets (ViT, (B, N, C)): the patch tokens are the point set that is aligned; the first
``num_prefix_tokens`` tokens (class and register tokens) have no position, so they are interpolated
plainly with the same lam.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from ..ot import check_plan, get_solver, transport_plan
from ..ot.align import DIRECTIONS, PROJECTIONS, _project
from .base import Draw
from .checks import check_choice
from .feature_mix import FeatureMixupBase
from .hooks import MixFn, check_feature_output
from .layers import INPUT, default_feature_layer, infer_map_layout
from .rng import rand, randint
from .targets import lam_weights, pair_with

__all__ = ["AlignMixup", "align_mix_features", "feature_points", "flip_pair_plans"]

_LAYOUTS = ("nchw", "nhwc", "nlc")


def feature_points(a: torch.Tensor, layout: str = "nchw", num_prefix_tokens: int = 0) -> torch.Tensor:
    """The (B, n, C) point set of a feature map or token set (prefix tokens left out)."""
    if layout == "nchw":
        return a.flatten(2).transpose(1, 2)  # a view for channels_last maps, a copy otherwise
    if layout == "nhwc":
        return a.flatten(1, 2)
    return a[:, num_prefix_tokens:]


def _from_points(points: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "nchw":
        return points.transpose(1, 2).reshape(like.shape)
    return points.reshape(like.shape) if layout == "nhwc" else points


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def flip_pair_plans(
    points: torch.Tensor,
    *,
    solver: str = "default",
    eps: float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
) -> torch.Tensor:
    """Transport plans between each point set and its ``flip(0)`` partner, solving only half of them.

    With uniform weights and a symmetric cost, the plan from j to i is the transpose of the plan from
    i to j, so the pairs (i, B-1-i) and (B-1-i, i) share one solve: half the solver time, the same
    plans up to the solver's tolerance (exact only for converged plans: the ``reference`` solver's
    early-stopped plans are not, which is why ``alignmixup_paper`` solves every pair).

    Args:
        points: (B, n, C) point sets; sample i pairs with B-1-i.
        solver: mixkit.ot solver name.
        eps: Entropic regularisation (None: the solver's default).
        max_iter: Solver iterations (None: the solver's default).
        tol: Solver tolerance (None: the solver's default).

    Returns:
        (B, n, n) fp32 plans (fp64 for fp64 points), row i between points[i] and points[B-1-i]; no grad.
    """
    batch = points.shape[0]
    solved = (batch + 1) // 2  # the first half, and the middle sample of an odd batch
    points = points.detach()
    with torch.no_grad():
        half = transport_plan(points[:solved], points.flip(0)[:solved], solver=solver, eps=eps, max_iter=max_iter, tol=tol)
    return torch.cat([half, half[: batch - solved].flip(0).transpose(1, 2)])


def align_mix_features(
    a: torch.Tensor,
    b: torch.Tensor,
    lam: float | torch.Tensor,
    *,
    direction: str = "to_a",
    layout: str = "nchw",
    num_prefix_tokens: int = 0,
    solver: str = "default",
    eps: float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    plan: torch.Tensor | None = None,
    projection: str = "barycentric",
) -> torch.Tensor:
    """Aligns one batch of feature maps (or token sets) to the other with OT and interpolates.

    Args:
        a: Features of the samples, (B, C, H, W) for 'nchw', (B, H, W, C) for 'nhwc', (B, N, C) for 'nlc'.
        b: Partner features, same shape (AlignMixup uses ``a.flip(0)`` or ``a[permutation]``).
        lam: Weight of ``a``: a float or (B,) per-sample weights.
        direction: 'to_a' keeps a's positions: lam * a + (1 - lam) * (b carried onto a);
            'to_b' keeps b's positions: lam * (a carried onto b) + (1 - lam) * b.
        layout: Where the channels are: 'nchw', 'nhwc' or 'nlc' (tokens).
        num_prefix_tokens: For 'nlc', leading tokens (class / register) left out of the alignment and
            interpolated plainly.
        solver: mixkit.ot solver name ('default', 'torch', 'numba', 'triton', 'pot', 'reference').
        eps: Entropic regularisation (None: the solver's default).
        max_iter: Solver iterations (None: the solver's default).
        tol: Solver stopping tolerance (None: the solver's default).
        plan: Precomputed (B, n, n) plans between a's and b's point sets (e.g. ``flip_pair_plans``);
            None solves them here (``mixkit.ot.transport_plan``, detached). Checked by
            ``mixkit.ot.check_plan`` (on the CPU: finite, non-negative, mass in every row).
        projection: 'barycentric' (mixkit's: the row-normalised plan, each aligned point a weighted mean of
            the partner's points) or 'scaled_plan' (the authors': the plan times n, not normalised).

    Returns:
        The mix, with ``a``'s shape, dtype and memory format. Gradients flow into both ``a`` and ``b``;
        the transport plan is detached, as in the paper.
    """
    check_choice("direction", direction, DIRECTIONS)
    check_choice("layout", layout, _LAYOUTS)
    check_choice("projection", projection, PROJECTIONS)
    if a.shape != b.shape:
        raise ValueError(f"features to mix must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    expected_ndim = 3 if layout == "nlc" else 4
    if a.ndim != expected_ndim:
        raise ValueError(f"layout {layout!r} expects {expected_ndim}-d features, got shape {tuple(a.shape)}")
    if layout == "nlc" and not 0 <= num_prefix_tokens < a.shape[1]:
        raise ValueError(
            f"num_prefix_tokens must be in [0, {a.shape[1]}) for {a.shape[1]} tokens, got {num_prefix_tokens}"
        )
    prefix = num_prefix_tokens if layout == "nlc" else 0
    pa, pb = feature_points(a, layout, prefix), feature_points(b, layout, prefix)
    if plan is None:
        with torch.no_grad():
            plan = transport_plan(pa.detach(), pb.detach(), solver=solver, eps=eps, max_iter=max_iter, tol=tol)
    else:
        check_plan(plan, (pa.shape[0], pa.shape[1], pb.shape[1]))
    return _mix_aligned(a, b, pa, pb, lam, plan, direction, layout, prefix, projection)


def _mix_aligned(a: torch.Tensor, b: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor, lam: float | torch.Tensor,
                 plan: torch.Tensor, direction: str, layout: str, prefix: int, projection: str) -> torch.Tensor:
    # align_mix_features below its checks: AlignMixup's hook calls it every step with its own plans and
    # validated settings (a plan scan here would cost a host sync per step on CUDA-like paths).
    aligned = _project(plan, pa, pb, direction, projection)  # mixkit.ot's one alignment implementation
    w = lam_weights(lam, pa)
    mixed = pa * w + aligned * (1 - w) if direction == "to_a" else aligned * w + pb * (1 - w)
    if prefix:
        wp = lam_weights(lam, a)
        mixed = torch.cat([a[:, :prefix] * wp + b[:, :prefix] * (1 - wp), mixed], dim=1)
    return _from_points(mixed, a, layout).contiguous(memory_format=_memory_format(a))


class AlignMixup(FeatureMixupBase):
    """AlignMixup behind timm's Mixup interface.

    Per mixed batch: with probability ``input_prob`` plain input mixup; otherwise a layer is drawn from
    ``layers`` and armed, and the next training forward replaces its output by
    ``align_mix_features(f, f[partner], lam, ...)``. lam ~ Beta(mixup_alpha, mixup_alpha) in both branches.
    timm's Mixup arguments, the pairing and the hook rules are ``FeatureMixupBase``'s; under the flip
    pairing the pairs (i, B-1-i) share one solve (``flip_pair_plans``), under the random pairing every
    pair is solved.

    The model and ``layers`` go to the base; ``layers`` defaults to the last feature stage before pooling
    (timm ``feature_info[-1]``: resnet 'layer4', convnext 'stages.3', vit 'blocks.<last>'), module names or
    timm feature_info indices, one drawn per batch.

    Args:
        input_prob: Probability of the plain input-mixup branch per batch; 0.5 as in the authors' code.
        direction: 'random' (50/50 per batch, as in the authors' code), 'to_a' (keep the sample's
            positions) or 'to_b' (keep the partner's positions).
        solver: mixkit.ot solver: 'default' (mixkit.ot's: the compiled numba loop on the CPU, the guarded
            fused Triton kernel on CUDA), 'torch', 'numba', 'triton', 'pot' or 'reference' (the paper's
            Sinkhorn).
        eps: Entropic regularisation (None: the solver's default).
        max_iter: Solver iterations (None: the solver's default).
        tol: Solver tolerance (None: the solver's default).
        num_prefix_tokens: Leading tokens of token-set outputs kept out of the alignment. None: the
            model's ``num_prefix_tokens`` attribute (timm ViTs), else 0.
        feature_layout: 'auto' (3-d outputs are tokens; 4-d maps are NCHW or NHWC as timm's
            ``feature_info`` channel counts, the model's ``output_fmt`` or the shape say), 'nchw', 'nhwc'
            or 'nlc'.
        projection: 'barycentric' (default) or 'scaled_plan' (the authors'); see ``align_mix_features``.
        **kwargs: ``FeatureMixupBase``'s arguments: ``model``, ``layers``, timm's ``mixup_alpha`` (default
            2.0 as in the paper), ``prob``, ``mode``, ``label_smoothing``, ``num_classes``, ..., ``pairing``.
    """

    method = "alignmixup"

    def __init__(
        self,
        *,
        input_prob: float = 0.5,
        direction: str = "random",
        solver: str = "default",
        eps: float | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        num_prefix_tokens: int | None = None,
        feature_layout: str = "auto",
        projection: str = "barycentric",
        **kwargs,
    ) -> None:
        # Checked before the base attaches hooks, so a bad argument leaves the model untouched.
        if not 0.0 <= input_prob <= 1.0:
            raise ValueError(f"input_prob must be in [0, 1], got {input_prob!r}")
        check_choice("direction", direction, ("random", *DIRECTIONS))
        check_choice("feature_layout", feature_layout, ("auto", *_LAYOUTS))
        check_choice("projection", projection, PROJECTIONS)
        if num_prefix_tokens is not None and num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        # A solver name or setting the OT module rejects fails here, not at the first training step (checked
        # without solving: a probe solve cost about 2 s of start-up).
        get_solver(solver).resolve_args(eps, max_iter, tol)
        super().__init__(**kwargs)
        if num_prefix_tokens is None:
            num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        self.input_prob, self.direction, self.projection = input_prob, direction, projection
        self.solver, self.eps, self.max_iter, self.tol = solver, eps, max_iter, tol
        self.num_prefix_tokens, self.feature_layout = num_prefix_tokens, feature_layout
        self._layouts: dict[str, str] = {}

    def _default_layers(self, model: nn.Module) -> str:
        return default_feature_layer(model)

    def _check_layers(self, layers: Sequence[str]) -> None:
        if INPUT in layers:
            raise ValueError("'input' is not an AlignMixup layer: the input branch is controlled by input_prob")

    def _draw_site(self, draw: Draw) -> Draw:
        # Same draw order as the authors' code: input-vs-feature first, then (feature branch) direction.
        if rand() < self.input_prob:
            return dataclasses.replace(draw, layer=INPUT, branch="input")
        draw = super()._draw_site(draw)
        direction = DIRECTIONS[randint(2)] if self.direction == "random" else self.direction
        return dataclasses.replace(draw, direction=direction)

    def _layout(self, layer: str, output: torch.Tensor) -> str:
        if self.feature_layout != "auto":
            return self.feature_layout
        if output.ndim == 3:
            return "nlc"
        if layer not in self._layouts:
            self._layouts[layer] = infer_map_layout(self.model, layer, output.shape)
        return self._layouts[layer]

    def _plans(self, points: torch.Tensor, partner: torch.Tensor | None) -> torch.Tensor:
        kwargs = dict(solver=self.solver, eps=self.eps, max_iter=self.max_iter, tol=self.tol)
        if partner is None:
            return flip_pair_plans(points, **kwargs)
        points = points.detach()
        with torch.no_grad():
            return transport_plan(points, pair_with(points, partner), **kwargs)

    def _make_mix_fn(self, draw: Draw, lam: torch.Tensor, partner: torch.Tensor | None, batch_size: int) -> MixFn:
        layer, direction = draw.layer, draw.direction
        cache: dict[str, torch.Tensor] = {}

        def mix(output: torch.Tensor) -> torch.Tensor:
            output = check_feature_output(layer, output, batch_size, ndims=(3, 4))
            layout = self._layout(layer, output)
            prefix = self.num_prefix_tokens if layout == "nlc" else 0
            points = feature_points(output, layout, prefix)
            if points.shape[1] < 2:
                raise ValueError(
                    f"layer {layer!r} outputs {tuple(output.shape)} ({layout}): one position per sample, so "
                    "aligning it would be plain mixup. Pick a layer before global pooling (for timm models a "
                    "feature_info stage, the default), or use create_mixup('manifold') for plain feature mixup."
                )
            if "plan" not in cache:  # a checkpoint replay sees the same features: reuse the solve
                cache["plan"] = self._plans(points, partner)
            partner_output = pair_with(output, partner)
            return _mix_aligned(output, partner_output, points, feature_points(partner_output, layout, prefix), lam,
                                cache["plan"], direction, layout, prefix, self.projection)

        return mix
