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
  logits with ``keep_graph=True``: a method that adds the clean batch's loss to the objective (PuzzleMix's
  ``clean_lam``) gets them with their graph, for its ``extra_loss``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .layers import unwrap_model

__all__ = ["NO_INPUT_GRADIENT", "frozen_norm_statistics", "input_gradient", "module_mode"]

NO_INPUT_GRADIENT = (
    "the saliency pass needs the loss gradient with respect to the input images, but the model gives none: its "
    "forward does not use the input differentiably (it detaches it, casts it to an integer type, or runs under "
    "torch.no_grad inside). Make the input path differentiable, or use a method without a saliency pass "
    "('mixup', 'cutmix')"
)


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Keeps the running statistics (and batch counters) of every normalisation layer as they were.

    Layers with a ``momentum`` get momentum 0 for the pass (their update then leaves the statistics as they
    are), so a graph kept through them (``input_gradient(keep_graph=True)``) still finds the buffers it saved
    unmodified; every buffer that still changed (the batch counters) is copied back on exit.
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
                    buffer = getattr(module, name)
                    if not torch.equal(buffer, value):
                        buffer.copy_(value)


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
    with torch.enable_grad(), frozen_norm_statistics(module):
        inputs = x.detach().requires_grad_(True)
        logits = module(inputs).float()
        try:
            (grad,) = torch.autograd.grad(loss_fn(logits, target), inputs, retain_graph=keep_graph)
        except RuntimeError as err:  # autograd's words for an input the loss does not depend on
            if "does not require grad" in str(err) or "not have been used in the graph" in str(err):
                raise ValueError(NO_INPUT_GRADIENT) from err
            raise
    return grad.detach(), (logits if keep_graph else logits.detach())
