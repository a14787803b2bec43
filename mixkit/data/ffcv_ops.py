"""An FFCV pipeline operation that mixkit needs and FFCV does not ship.

FFCV's CPU images are HWC; its ToTorchImage(channels_last=False) makes them NCHW with a torch copy in
the loader's main thread, serially. ``ToCHW`` does the same transpose inside FFCV's compiled, parallel
stage, into a buffer that FFCV reuses, so NCHW output costs no extra serial copy.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

__all__ = ["ToCHW"]


class ToCHW(Operation):
    """Transposes a batch of HWC arrays to CHW (NumPy stage, before ToTensor)."""

    def generate_code(self) -> Callable:
        parallel_range = Compiler.get_iterator()

        def to_chw(images, dst):
            for i in parallel_range(images.shape[0]):
                for c in range(images.shape[3]):
                    dst[i, c] = images[i, :, :, c]
            return dst[: images.shape[0]]

        to_chw.is_parallel = True
        return to_chw

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        h, w, c = previous_state.shape
        return (replace(previous_state, shape=(c, h, w)),
                AllocationQuery((c, h, w), dtype=previous_state.dtype))
