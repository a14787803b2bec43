"""AlignMixup (Venkataramanan et al., CVPR 2022): mix feature maps after aligning them with optimal transport.

Functional core ``align_mix_features`` and the stateful ``AlignMixup`` (timm's Mixup call contract).
Semantics follow the authors' code (shashankvkt/AlignMixup_CVPR22): per batch, with probability
``input_prob`` plain input mixup; otherwise, at the chosen layer, the partner's feature map is carried
onto the sample's spatial positions by an entropic OT plan (detached) and interpolated,
lam * a + (1 - lam) * aligned_b, or, 50/50 per batch, the reverse direction
lam * aligned_a + (1 - lam) * b; targets are lam * y_a + (1 - lam) * y_b in both cases.
Paper: https://arxiv.org/abs/2103.15375

Token sets (ViT, (B, N, C)): the patch tokens are the point set that is aligned; the first
``num_prefix_tokens`` tokens (class and register tokens) have no position, so they are interpolated
plainly with the same lam.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..ot import align, transport_plan
from .feature_mix import FeatureMixupBase, lam_weights, rand, randint
from .hooks import MixFn, check_feature_output
from .layers import INPUT, LayerSpec, default_feature_layer, unwrap_model

__all__ = ["AlignMixup", "align_mix_features", "feature_points", "flip_pair_plans"]

_DIRECTIONS = ("to_a", "to_b")
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
    solver: str = "torch",
    eps: float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
) -> torch.Tensor:
    """Transport plans between each point set and its ``flip(0)`` partner, solving only half of them.

    With uniform weights and a symmetric cost, the plan from j to i is the transpose of the plan from
    i to j, so the pairs (i, B-1-i) and (B-1-i, i) share one solve: half the solver time, the same
    plans up to the solver's tolerance.

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
    solver: str = "torch",
    eps: float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    plan: torch.Tensor | None = None,
) -> torch.Tensor:
    """Aligns one batch of feature maps (or token sets) to the other with OT and interpolates.

    Args:
        a: Features of the samples, (B, C, H, W) for 'nchw', (B, H, W, C) for 'nhwc', (B, N, C) for 'nlc'.
        b: Partner features, same shape (AlignMixup uses ``a.flip(0)``).
        lam: Weight of ``a``: a float or (B,) per-sample weights.
        direction: 'to_a' keeps a's positions: lam * a + (1 - lam) * (b carried onto a);
            'to_b' keeps b's positions: lam * (a carried onto b) + (1 - lam) * b.
        layout: Where the channels are: 'nchw', 'nhwc' or 'nlc' (tokens).
        num_prefix_tokens: For 'nlc', leading tokens (class / register) left out of the alignment and
            interpolated plainly.
        solver: mixkit.ot solver name ('torch', 'pot', 'reference').
        eps: Entropic regularisation (None: the solver's default).
        max_iter: Solver iterations (None: the solver's default).
        tol: Solver stopping tolerance (None: the solver's default).
        plan: Precomputed (B, n, m) plans between a's and b's point sets (e.g. ``flip_pair_plans``);
            None solves them here (``mixkit.ot.align``).

    Returns:
        The mix, with ``a``'s shape, dtype and memory format. Gradients flow into both ``a`` and ``b``;
        the transport plan is detached, as in the paper.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
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
    # mixkit.ot.align solves the plan (detached, as in the paper) unless one is given, and projects in
    # the plan's precision (fp32 under autocast) before returning to the features' dtype.
    aligned = align(pa, pb, direction="to_x" if direction == "to_a" else "to_y", solver=solver, eps=eps,
                    max_iter=max_iter, tol=tol, plan=plan)
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
    ``align_mix_features(f, f.flip(0), lam, ...)``. lam ~ Beta(mixup_alpha, mixup_alpha) in both branches.
    Pairing is timm's ``flip(0)``; an odd batch's middle sample stays unmixed.

    Args:
        model: The model (timm or any nn.Module; DDP / Accelerate / compile wrappers are looked through).
        layers: Layer set, one drawn per batch: module names or timm feature_info indices. Default: the
            last feature stage before pooling (timm ``feature_info[-1]``: resnet 'layer4', convnext
            'stages.3', vit 'blocks.<last>').
        mixup_alpha: lam ~ Beta(mixup_alpha, mixup_alpha); 2.0 as in the paper.
        input_prob: Probability of the plain input-mixup branch per batch; 0.5 as in the authors' code.
        direction: 'random' (50/50 per batch, as in the authors' code), 'to_a' (keep the sample's
            positions) or 'to_b' (keep the partner's positions).
        solver: mixkit.ot solver: 'torch' (default), 'pot' or 'reference' (the paper's Sinkhorn).
        eps: Entropic regularisation (None: the solver's default).
        max_iter: Solver iterations (None: the solver's default).
        tol: Solver tolerance (None: the solver's default).
        num_prefix_tokens: Leading tokens of token-set outputs kept out of the alignment. None: the
            model's ``num_prefix_tokens`` attribute (timm ViTs), else 0.
        feature_layout: 'auto' (4-d outputs are NCHW, 3-d are tokens), 'nchw', 'nhwc' or 'nlc'.
        prob: Probability of mixing a batch (or element in 'pair' / 'elem' mode).
        mode: 'batch', 'pair' or 'elem' (timm's modes; lam per batch, pair or element).
        label_smoothing: Label smoothing of the soft targets.
        num_classes: Number of classes.
        multi_label: Dense (B, num_classes) multi-label targets.
        cutmix_alpha: timm's argument; must be 0.
        cutmix_minmax: timm's argument; must be None.
        switch_prob: timm's argument; unused.
        correct_lam: timm's argument; unused.
    """

    method = "alignmixup"

    def __init__(
        self,
        *,
        model: nn.Module,
        layers: LayerSpec | Sequence[LayerSpec] | None = None,
        mixup_alpha: float = 2.0,
        input_prob: float = 0.5,
        direction: str = "random",
        solver: str = "torch",
        eps: float | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        num_prefix_tokens: int | None = None,
        feature_layout: str = "auto",
        prob: float = 1.0,
        mode: str = "batch",
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        multi_label: bool = False,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        switch_prob: float = 0.5,
        correct_lam: bool = True,
    ) -> None:
        if model is None:
            raise ValueError("alignmixup mixes hidden features and needs the model: pass model=model")
        if not 0.0 <= input_prob <= 1.0:
            raise ValueError(f"input_prob must be in [0, 1], got {input_prob!r}")
        if direction not in ("random", *_DIRECTIONS):
            raise ValueError(f"direction must be 'random', 'to_a' or 'to_b', got {direction!r}")
        if feature_layout not in ("auto", *_LAYOUTS):
            raise ValueError(f"feature_layout must be 'auto' or one of {_LAYOUTS}, got {feature_layout!r}")
        layers = default_feature_layer(model) if layers is None else layers
        if layers == INPUT or (not isinstance(layers, str | int) and INPUT in layers):
            raise ValueError("'input' is not an AlignMixup layer: the input branch is controlled by input_prob")
        super().__init__(
            model=model,
            layers=layers,
            mixup_alpha=mixup_alpha,
            prob=prob,
            mode=mode,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
            multi_label=multi_label,
            cutmix_alpha=cutmix_alpha,
            cutmix_minmax=cutmix_minmax,
            switch_prob=switch_prob,
            correct_lam=correct_lam,
        )
        if num_prefix_tokens is None:
            num_prefix_tokens = int(getattr(unwrap_model(model), "num_prefix_tokens", 0) or 0)
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.input_prob = input_prob
        self.direction = direction
        self.solver = solver
        self.eps = eps
        self.max_iter = max_iter
        self.tol = tol
        self.num_prefix_tokens = num_prefix_tokens
        self.feature_layout = feature_layout
        self.last_direction: str | None = None
        # Fail at construction, not at the first training step, on a solver name or setting the OT
        # module rejects.
        probe = torch.rand(2, 3, 2)
        transport_plan(probe[:1], probe[1:], solver=solver, eps=eps, max_iter=max_iter, tol=tol)

    def _choose_layer(self) -> str:
        # Same draw order as the authors' code: input-vs-feature first, then (feature branch) direction.
        if rand() < self.input_prob:
            self.last_direction = None
            return INPUT
        layer = super()._choose_layer()
        if self.direction == "random":
            self.last_direction = _DIRECTIONS[randint(2)]
        else:
            self.last_direction = self.direction
        return layer

    def _layout(self, output: torch.Tensor) -> str:
        if self.feature_layout != "auto":
            return self.feature_layout
        return "nchw" if output.ndim == 4 else "nlc"

    def _make_mix_fn(self, layer: str, lam: torch.Tensor, batch_size: int) -> MixFn:
        direction = self.last_direction or "to_a"
        kwargs = dict(solver=self.solver, eps=self.eps, max_iter=self.max_iter, tol=self.tol)

        cache: dict[str, torch.Tensor] = {}

        def mix(output: torch.Tensor) -> torch.Tensor:
            output = check_feature_output(layer, output, batch_size, ndims=(3, 4))
            layout = self._layout(output)
            prefix = self.num_prefix_tokens if layout == "nlc" else 0
            if "plan" not in cache:  # a checkpoint replay sees the same features: reuse the solve
                cache["plan"] = flip_pair_plans(feature_points(output, layout, prefix), **kwargs)
            return align_mix_features(
                output, output.flip(0), lam, direction=direction, layout=layout, num_prefix_tokens=prefix,
                plan=cache["plan"],
            )

        return mix
