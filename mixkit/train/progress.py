"""The training progress bar (main process only): loss, lr, images/s and the share of time spent
waiting for data. When stderr is not a terminal (a log file, a batch job), one plain line per ``show()``
(every ``--log-interval`` steps) instead of a bar that fills the log with carriage returns."""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

__all__ = ["EpochProgress"]


class EpochProgress:
    """Times one epoch's loop: ``wait_done()`` after a batch arrives, ``step_done(n)`` after its step.

    Args:
        total: Batches in the epoch.
        epoch: Epoch index (shown in the bar).
        start: Batches already done (a resumed epoch).
        enabled: Draw the bar (the main process; off with --no-progress).
        world_size: Processes; images/s counts all of them.
        desc: Bar label prefix.
        interactive: Draw a bar (True) or print lines (False). None: a bar when stderr is a terminal.
    """

    def __init__(self, total: int, *, epoch: int, start: int = 0, enabled: bool = True, world_size: int = 1,
                 desc: str = "train", interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.enabled, self.total, self.label = enabled, total, f"{desc} {epoch}"
        self.done = start
        self.world_size = world_size
        self.data_s = 0.0
        self.compute_s = 0.0
        self.images = 0
        self._t = time.perf_counter()
        self._mark = (0.0, 0)  # (data + compute seconds, images) at the last interval_images_per_s()
        self.bar = tqdm(total=total, initial=start, desc=self.label, disable=not (enabled and self.interactive),
                        dynamic_ncols=True, leave=True, mininterval=0.5)

    def wait_done(self) -> None:
        now = time.perf_counter()
        self.data_s += now - self._t
        self._t = now

    def step_done(self, batch_size: int) -> None:
        now = time.perf_counter()
        self.compute_s += now - self._t
        self._t = now
        self.images += batch_size * self.world_size
        self.done += 1
        self.bar.update(1)

    @property
    def images_per_s(self) -> float:
        total = self.data_s + self.compute_s
        return self.images / total if total > 0 else 0.0

    def interval_images_per_s(self) -> float:
        """Images per second (all processes) since the previous call, or since the epoch (part) started."""
        seconds, images = self.data_s + self.compute_s, self.images
        (s0, i0), self._mark = self._mark, (seconds, images)
        return (images - i0) / (seconds - s0) if seconds > s0 else 0.0

    @property
    def data_share(self) -> float:
        total = self.data_s + self.compute_s
        return self.data_s / total if total > 0 else 0.0

    def show(self, *, lr: float, **losses: float) -> None:
        """Shows the running losses (``loss``, and a method's extra term by its name), lr and throughput."""
        terms = " ".join(f"{name} {value:.4f}" for name, value in losses.items())
        text = f"{terms} lr {lr:.3g} {self.images_per_s:.0f} img/s data {100 * self.data_share:.0f}%"
        if self.interactive:
            self.bar.set_postfix_str(text, refresh=False)
        elif self.enabled:
            print(f"{self.label}: {self.done}/{self.total} {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()
