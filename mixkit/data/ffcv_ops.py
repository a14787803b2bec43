"""An FFCV pipeline operation that mixkit needs and FFCV does not ship.

FFCV's CPU pipeline normalises into HWC arrays (NormalizeImage); its ToTorchImage(channels_last=False)
then makes NCHW with a torch copy in the loader's main thread, serially, which costs a quarter of the
throughput on a 2-core CPU. ``NormalizeToCHW`` does the same lookup-table normalisation but writes
channel planes, inside FFCV's compiled, parallel stage: NCHW output at the cost of channels-last.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

__all__ = ["NormalizeToCHW"]


class NormalizeToCHW(Operation):
    """Normalises uint8 HWC images to float32 CHW in one pass (NumPy stage, before ToTensor).

    The same lookup-table normalisation as ffcv's NormalizeImage (hand-written because that one only
    writes interleaved HWC pixels), writing channel planes in the same single pass.

    Args:
        mean: Per-channel mean on the 0-255 scale.
        std: Per-channel std on the 0-255 scale.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.table = ((np.arange(256)[:, None] - np.asarray(mean)[None, :]) / np.asarray(std)[None, :]) \
            .astype(np.float32)

    def generate_code(self) -> Callable:
        parallel_range = Compiler.get_iterator()
        table = self.table

        def normalize_to_chw(images, dst):
            for i in parallel_range(images.shape[0]):
                for y in range(images.shape[1]):
                    for x in range(images.shape[2]):
                        for c in range(3):
                            dst[i, c, y, x] = table[images[i, y, x, c], c]
            return dst[: images.shape[0]]

        normalize_to_chw.is_parallel = True
        return normalize_to_chw

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        h, w, c = previous_state.shape
        if c != 3:
            raise ValueError(f"NormalizeToCHW needs RGB images, got {c} channels.")
        return (replace(previous_state, shape=(c, h, w), dtype=np.dtype(np.float32), jit_mode=True),
                AllocationQuery((c, h, w), dtype=np.dtype(np.float32)))
