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
* what it returns is detached: the mix built from it carries no graph back into the pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .layers import unwrap_model

__all__ = ["NO_INPUT_GRADIENT", "frozen_norm_statistics", "input_gradient"]

NO_INPUT_GRADIENT = (
    "the saliency pass needs the loss gradient with respect to the input images, but the model gives none: its "
    "forward does not use the input differentiably (it detaches it, casts it to an integer type, or runs under "
    "torch.no_grad inside). Make the input path differentiable, or use a method without a saliency pass "
    "('mixup', 'cutmix')"
)


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Restores the running statistics (and batch counters) of every normalisation layer on exit."""
    # Duck-typed (a running_mean buffer): torch's BatchNorm/InstanceNorm family, SyncBatchNorm, timm's
    # BatchNormAct2d and any custom layer keeping running statistics the same way.
    saved = [(module, {name: buf.clone() for name, buf in module.named_buffers(recurse=False)})
             for module in model.modules() if isinstance(getattr(module, "running_mean", None), torch.Tensor)]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in saved:
                for name, value in buffers.items():
                    getattr(module, name).copy_(value)


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the loss on clean inputs with respect to the inputs, and the logits.

    Args:
        model: The model (wrappers are looked through).
        x: (B, C, H, W) clean inputs.
        target: (B,) class indices, or (B, K) soft targets.
        loss_fn: ``loss_fn(logits, target)``, a scalar; default cross-entropy (mean over the batch).

    Returns:
        ``(grad, logits)``, both detached: grad has x's shape and dtype, logits are float32.

    Raises:
        ValueError: The model's forward gives the loss no gradient with respect to its input.
    """
    module = unwrap_model(model)
    loss_fn = loss_fn or F.cross_entropy
    with torch.enable_grad(), frozen_norm_statistics(module):
        inputs = x.detach().requires_grad_(True)
        logits = module(inputs).float()
        try:
            (grad,) = torch.autograd.grad(loss_fn(logits, target), inputs)
        except RuntimeError as err:  # autograd's words for an input the loss does not depend on
            if "does not require grad" in str(err) or "not have been used in the graph" in str(err):
                raise ValueError(NO_INPUT_GRADIENT) from err
            raise
    return grad.detach(), logits.detach()
