"""Checks of the labels and of the class count that run while training, without stalling the device.

``LabelRangeCheck``: class indices in [0, num_classes), with no host sync on CUDA. ``ClassCountCheck``:
the first training forward's output size, for models that do not say their class count.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checks import check_model_classes, check_output_classes
from .layers import unwrap_model

__all__ = ["ClassCountCheck", "LabelRangeCheck", "watch_model_classes"]


class ClassCountCheck:
    """A one-shot forward hook: the first training forward's (B, K) output must have K == ``num_classes``.

    For models that do not say their class count (no ``num_classes`` attribute), so a wrong
    ``num_classes`` (timm's 1000 default with a 10-class model) is named at the first forward rather than
    failing later inside the loss. It removes itself after that forward; it pickles and deep-copies with
    the model.
    """

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        self.num_classes = num_classes
        self.handle = model.register_forward_hook(self)

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        if not (module.training and isinstance(output, torch.Tensor) and output.ndim == 2):
            return
        self.handle.remove()
        check_output_classes(output, self.num_classes)


def watch_model_classes(model: nn.Module | None, num_classes: int) -> ClassCountCheck | None:
    """``check_model_classes`` now, and a ``ClassCountCheck`` on the model when it does not say its count."""
    if not isinstance(model, nn.Module) or check_model_classes(model, num_classes):
        return None
    return ClassCountCheck(unwrap_model(model), num_classes)


def _range_error(low: int, high: int, num_classes: int, when: str) -> ValueError:
    return ValueError(
        f"target labels must be in [0, num_classes) = [0, {num_classes}), got min {low} and max {high}{when}; "
        "set num_classes to the dataset's number of classes"
    )


class LabelRangeCheck:
    """Checks that class indices lie in [0, num_classes) without synchronising the host on CUDA.

    On the CPU the check is immediate. On CUDA each batch's min and max are copied to pinned host memory
    asynchronously, and a later call reads them once an event says the copy has landed (``query()`` does
    not block): a bad batch raises at a later mixing call, at most a few steps late, or at ``flush()``.
    Meanwhile its labels give all-``off_value`` rows in the soft targets (never a device-side assert).

    Args:
        num_classes: The classifier's number of classes.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._step = 0
        self._pending: list[tuple[int, torch.cuda.Event, torch.Tensor]] = []

    def __call__(self, target: torch.Tensor) -> None:
        """Checks one batch of (B,) class indices (on CUDA: queues it and reports earlier batches)."""
        self._step += 1
        self._report(wait=False)
        if target.device.type != "cuda":
            low, high = (int(v) for v in torch.aminmax(target))
            if low < 0 or high >= self.num_classes:
                raise _range_error(low, high, self.num_classes, "")
            return
        host = torch.empty(2, dtype=target.dtype, pin_memory=True)
        host.copy_(torch.stack(torch.aminmax(target)), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((self._step, event, host))

    def flush(self) -> None:
        """Waits for the queued CUDA checks and raises for a bad batch among them."""
        self._report(wait=True)

    def _report(self, wait: bool) -> None:
        while self._pending and (wait or self._pending[0][1].query()):
            step, event, host = self._pending.pop(0)
            event.synchronize()
            low, high = host.tolist()
            if low < 0 or high >= self.num_classes:
                self._pending.clear()
                raise _range_error(low, high, self.num_classes, f" in the batch of mixing call {step}")
