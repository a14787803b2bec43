"""Where training stands, and its conversion to and from a checkpoint's ``train_state_<rank>.pt``.

The position (epoch, batch, updates), the partial epoch loss, the RNG states at the epoch start (to replay
the loader's shuffle and worker seeds) and the mixing method's own state. Plain tensors and numbers only,
so checkpoints load with ``weights_only=True``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .checkpoint import get_rng_state

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """The loop's state between steps.

    Attributes:
        epoch: The epoch training continues in.
        batch: The batch of that epoch it continues at.
        num_updates: Optimizer updates so far.
        loss_sum: Sum of the per-batch losses times the batch sizes in this epoch (a float64 device tensor:
            adding to it costs no host sync).
        loss_count: Samples behind ``loss_sum``.
        extra_sum: The same for the mixing method's extra loss term (when it has one).
        extra_count: Samples behind ``extra_sum``: those of the steps that had the term (a method may leave it
            out of a step, AlignMixup/AE in its input-mixup branch), so its logged mean is over those.
        epoch_rng: Every RNG state at the start of ``epoch`` (None until the epoch starts).
        mixup: The mixing method's ``state_dict()``.
        best: The best evaluation so far by ``--eval-metric`` (``metric``, ``value``, ``epoch``, ``weights``), or
            None (no evaluation yet, or none at all); its weights are ``model_best.safetensors``.
    """

    epoch: int = 0
    batch: int = 0
    num_updates: int = 0
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    loss_count: int = 0
    extra_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    extra_count: int = 0
    epoch_rng: dict[str, Any] | None = None
    mixup: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] | None = None

    def reset_epoch_loss(self) -> None:
        self.loss_sum.zero_()
        self.extra_sum.zero_()
        self.loss_count = 0
        self.extra_count = 0

    def to_checkpoint(self, **extra: Any) -> dict[str, Any]:
        """The checkpoint form, with the RNG states of now (``rng``) and ``extra`` diagnostics."""
        return {"epoch": self.epoch, "batch": self.batch, "num_updates": self.num_updates,
                "loss_sum": float(self.loss_sum.item()), "extra_sum": float(self.extra_sum.item()),
                "loss_count": self.loss_count, "extra_count": self.extra_count, "rng": get_rng_state(), "epoch_rng": self.epoch_rng,
                "mixup": dict(self.mixup), "best": dict(self.best) if self.best else None, **extra}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any], device: torch.device) -> tuple[TrainState, dict[str, Any]]:
        """The state and the RNG states to restore once the skipped batches are replayed."""
        state = cls(epoch=int(saved["epoch"]), batch=int(saved["batch"]), num_updates=int(saved["num_updates"]),
                    loss_count=int(saved["loss_count"]), extra_count=int(saved.get("extra_count", 0)), epoch_rng=saved["epoch_rng"],
                    mixup=dict(saved.get("mixup", {})), best=saved.get("best"))
        state.loss_sum = torch.tensor(float(saved["loss_sum"]), dtype=torch.float64, device=device)
        state.extra_sum = torch.tensor(float(saved.get("extra_sum", 0.0)), dtype=torch.float64, device=device)
        return state, saved["rng"]
