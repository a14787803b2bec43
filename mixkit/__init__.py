"""mixkit: timm/torchvision-compatible mixup with AlignMixup and fast data loaders."""

__version__ = "0.1.0"
from .ot import align, get_solver, list_solvers
