"""A small dispatch counter for the OT tests: aten ops, and the ones that read a value on the host.

Independent of ``benchmarks/common.py``'s ``OpCounter`` on purpose: the tests check mixkit.ot's op and
sync budgets with their own, simpler count.
"""

from torch.utils._python_dispatch import TorchDispatchMode

# Ops that copy a device value to the host: a sync on CUDA.
HOST_READS = ("_local_scalar_dense", "is_nonzero", "item")


class DispatchCounter(TorchDispatchMode):
    """Counts dispatched aten ops (``ops``) and host reads (``syncs``) inside its ``with`` block."""

    def __init__(self):
        super().__init__()
        self.ops, self.syncs = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.syncs += func.__name__.split(".")[0] in HOST_READS
        return func(*args, **(kwargs or {}))
