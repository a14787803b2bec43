"""A test-only method with every optional part of the contract, as one file (mixkit/mix/base.py):

* a trainable part (``extra_modules``): ``probe``, a linear map from the classifier's logits to each image's
  mean colour;
* an extra loss (``extra_loss``): the probe's squared error on the training forward, used only on the
  steps whose batch is mixed (so with ``prob=0.5`` some steps, differing per rank, leave the probe unused);
* a saliency pass (``uses_model_gradient``): the input gradient on the clean batch, whose sign picks the
  mixing partner order, so the mix depends on the model's gradient.

``python tests/parts_probe.py <mixkit-train flags>`` registers it as ``--mixup probe`` and trains; the tests
also register it in-process with ``registered()``.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixkit.mix import InputMixup, input_gradient, register_mixup, unregister_mixup  # noqa: E402
from mixkit.mix.base import Draw  # noqa: E402


class ProbeMixup(InputMixup):
    """mixup with a probe part, its loss and a saliency pass (see the module docstring)."""

    method = "probe"
    needs_model = True
    uses_model_gradient = True
    extra_loss_name = "probe_loss"

    def __init__(self, *, probe_weight: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.probe = nn.Linear(self.num_classes, 3)
        self.probe_weight = probe_weight
        self.saliency_calls = 0
        self._target_colour: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None
        self.add_model_hook(self.model, self._capture)  # shared by the EMA's deep copy, which it ignores

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"probe": self.probe}

    def apply(self, x, target, draw: Draw, lam, partner):
        grad, _ = input_gradient(self.model, x, target)
        self.saliency_calls += 1
        if grad.flatten(1).sum(1)[0] < 0 and draw.mixed:  # the saliency decides the direction of the mix
            x = x.flip(0)
        colour = x.mean((2, 3)).detach()
        x = super().apply(x, target, draw, lam, partner)
        self._target_colour = colour if draw.mixed else None  # the probe trains on mixed steps only
        return x

    def _capture(self, module, args, output) -> None:
        if module.training and torch.is_grad_enabled() and self._target_colour is not None:
            self._loss = self.probe_weight * F.mse_loss(self.probe(output.float()), self._target_colour)
            self._target_colour = None

    def extra_loss(self):
        loss, self._loss = self._loss, None
        return loss


@contextlib.contextmanager
def registered(**defaults):
    register_mixup("probe", ProbeMixup, **{"prob": 0.5, **defaults})
    try:
        yield
    finally:
        unregister_mixup("probe")


if __name__ == "__main__":
    from mixkit.train import main

    register_mixup("probe", ProbeMixup, prob=0.5)
    sys.exit(main(sys.argv[1:]))
