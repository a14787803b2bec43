"""The saliency pass of the methods that read the model's gradient (PuzzleMix, Co-Mixup, SaliencyMix's
gradient option): the loss gradient with respect to clean inputs, before they are mixed.

How a method gets it (the contract in ``mixkit.mix.base``): the method holds the model it was created
with, unwrapped (``needs_model``: DDP, Accelerate and torch.compile wrappers looked through, so the pass
runs the eager module and DDP's reducer never sees it), and calls ``input_gradient`` inside its call.
Rules, each for a reason:

* grad is enabled for the pass whatever the caller's mode, and only the input's gradient is computed
  (``torch.autograd.grad``), so parameters' ``.grad`` and DDP's gradient buckets are untouched;
* the model runs in its current mode (training: batch statistics, as the mixed forward will), but the
  running statistics of its normalisation layers are restored afterwards, so the extra forward does not
  count twice in BatchNorm's averages;
* it runs under the autocast that is active (``mixkit-train`` calls such methods inside its autocast);
  the loss is computed in float32;
* what it returns is detached (the mix built from it carries no graph back into the pass), except the
  logits with ``keep_graph=True``: a method that adds the clean batch's loss to the objective (the
  ``clean_lam`` of PuzzleMix and Co-Mixup) gets them with their graph, for its ``extra_loss``.

``GradientSaliencyMixupBase`` is the base of PuzzleMix and Co-Mixup: the pass in their authors' mode and
their clean-input loss, declared once (``clean_lam``; each method's default is its authors').
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import Draw, MixupBase
from .checks import check_output_classes
from .layers import unwrap_model

__all__ = ["NO_INPUT_GRADIENT", "GradientSaliencyMixupBase", "frozen_norm_statistics", "input_gradient",
           "module_mode"]

NO_INPUT_GRADIENT = (
    "the saliency pass needs the loss gradient with respect to the input images, but the model gives none: its "
    "forward does not use the input differentiably (it detaches it, casts it to an integer type, or runs under "
    "torch.no_grad inside). Make the input path differentiable, or use a method without a saliency pass "
    "('mixup', 'cutmix')"
)


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module, *, keep_graph: bool = False) -> Iterator[None]:
    """Keeps the running statistics (and batch counters) of every normalisation layer as they were.

    Layers with a ``momentum`` get momentum 0 for the pass, so their update leaves the statistics as they are
    (for finite batch statistics). On exit every buffer is copied back (a guard, and the batch counters),
    except, with ``keep_graph``, the running statistics of layers with a momentum: a graph kept through them
    (``input_gradient(keep_graph=True)``) saved those buffers, and an in-place copy would invalidate it.
    The copies are unconditional: comparing first (``torch.equal``) would wait for the device per buffer.

    Args:
        model: The module whose normalisation layers are kept.
        keep_graph: A graph through the pass outlives it (see above).
    """
    # Duck-typed (a running_mean buffer): torch's BatchNorm/InstanceNorm family, SyncBatchNorm, timm's
    # BatchNormAct2d and any custom layer keeping running statistics the same way.
    layers = [module for module in model.modules() if isinstance(getattr(module, "running_mean", None), torch.Tensor)]
    saved = [(module, {name: buf.clone() for name, buf in module.named_buffers(recurse=False)}) for module in layers]
    momenta = [(module, module.momentum) for module in layers if hasattr(module, "momentum")]
    for module, _ in momenta:
        module.momentum = 0.0  # also for momentum None (a cumulative average): its factor would be 1 / count
    try:
        yield
    finally:
        for module, momentum in momenta:
            module.momentum = momentum
        with torch.no_grad():
            for module, buffers in saved:
                for name, value in buffers.items():
                    if keep_graph and hasattr(module, "momentum") and name in ("running_mean", "running_var"):
                        continue  # unchanged at momentum 0, and saved by the kept graph
                    getattr(module, name).copy_(value)


@contextlib.contextmanager
def module_mode(model: nn.Module, *, training: bool) -> Iterator[None]:
    """Sets every submodule's training flag to ``training``, and back to what each was on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    keep_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the loss on clean inputs with respect to the inputs, and the logits.

    Args:
        model: The model (wrappers are looked through).
        x: (B, C, H, W) clean inputs.
        target: (B,) class indices, or (B, K) soft targets.
        loss_fn: ``loss_fn(logits, target)``, a scalar; default cross-entropy (mean over the batch).
        keep_graph: Return the logits with their graph (through the model's parameters), for a loss term on
            the clean batch; the graph is kept until that loss's backward.

    Returns:
        ``(grad, logits)``: grad detached, with x's shape and dtype; logits float32, detached unless
        ``keep_graph``.

    Raises:
        ValueError: The model's forward gives the loss no gradient with respect to its input.
    """
    module = unwrap_model(model)
    loss_fn = loss_fn or F.cross_entropy
    with torch.enable_grad(), frozen_norm_statistics(module, keep_graph=keep_graph):
        inputs = x.detach().requires_grad_(True)
        logits = module(inputs).float()
        try:
            (grad,) = torch.autograd.grad(loss_fn(logits, target), inputs, retain_graph=keep_graph)
        except RuntimeError as err:  # autograd's words for an input the loss does not depend on
            if "does not require grad" in str(err) or "not have been used in the graph" in str(err):
                raise ValueError(NO_INPUT_GRADIENT) from err
            raise
    return grad.detach(), (logits if keep_graph else logits.detach())


class GradientSaliencyMixupBase(MixupBase):
    """Base of the methods whose saliency is the loss gradient on the clean batch and whose authors train on
    that batch's loss too (PuzzleMix, Co-Mixup): ``saliency_pass`` and the clean loss.

    Both authors' code does the same, and so does this class: with ``clean_lam > 0`` the saliency forward
    runs in the model's training mode and its graph is kept (``input_gradient(keep_graph=True)``), and
    ``clean_lam`` times the clean batch's cross-entropy (binary cross-entropy for multi-label targets) is
    the ``extra_loss`` (logged as ``clean_loss``); with ``clean_lam=0`` the pass runs in eval mode and
    nothing is added. The loss is the authors' ImageNet form (``clean_lam * cross_entropy``, beside a
    soft-target cross-entropy mixed loss, as mixkit's); their CIFAR scripts weigh it by
    ``2 * clean_lam / num_classes`` beside a binary cross-entropy of the softmax, about twice the weight
    of the same ``clean_lam`` here (docs/mixing.md). The saliency does not depend on the loss's scale:
    both methods normalise it per sample.

    Args:
        clean_lam: Weight of the clean batch's cross-entropy added to the loss (0: none). None: the
            method's default (``default_clean_lam``: its authors' training script's).
        **kwargs: ``MixupBase``'s arguments.
    """

    needs_model = True
    uses_model_gradient = True
    default_clean_lam: ClassVar[float] = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The class attribute tells what a method built with its defaults logs; an instance sets its own.
        cls.extra_loss_name = "clean_loss" if cls.default_clean_lam > 0 else None

    def __init__(self, *, clean_lam: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        clean_lam = self.default_clean_lam if clean_lam is None else clean_lam
        if not (isinstance(clean_lam, int | float) and not isinstance(clean_lam, bool) and math.isfinite(clean_lam)
                and clean_lam >= 0):
            raise ValueError(f"clean_lam must be a finite number >= 0 (the clean loss's weight; 0 turns it off), "
                             f"got {clean_lam!r}")
        self.clean_lam = float(clean_lam)
        # Logged only where there is one (a summary column that is always empty otherwise).
        self.extra_loss_name = "clean_loss" if self.clean_lam > 0 else None
        self._loss: torch.Tensor | None = None

    def resolve(self, x: torch.Tensor, target: torch.Tensor, draw: Draw) -> Draw:
        self._loss = None  # a batch left unmixed has no clean loss (its saliency pass does not run)
        return super().resolve(x, target, draw)

    def saliency_pass(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss gradient on ``x`` and the logits (with their graph when the clean loss is on); sets the
        clean loss for ``extra_loss``."""
        loss_fn = F.binary_cross_entropy_with_logits if self.multi_label else F.cross_entropy
        labels = target.float() if self.multi_label else target
        keep = self.clean_lam > 0
        # The authors' mode: eval for the saliency alone, the training mode when its loss is trained on.
        with module_mode(self.model, training=self.model.training if keep else False):
            grad, logits = input_gradient(self.model, x, labels, loss_fn=loss_fn, keep_graph=keep)
        check_output_classes(logits, self.num_classes)  # an eval-mode pass is no training forward for the hook
        if keep:  # the same loss the saliency came from, on the kept graph
            self._loss = self.clean_lam * loss_fn(logits, labels)
        return grad, logits

    def extra_loss(self) -> torch.Tensor | None:
        loss, self._loss = self._loss, None
        return loss
