"""mixkit: timm/torchvision-compatible mixup with AlignMixup and fast data loaders."""

from . import models  # registers mixkit's timm models (preact_resnet*_cifar) with timm.create_model
from .ot import align, get_solver, list_solvers

__version__ = "0.1.0"
from .mix import AlignMixup, InputMixup, ManifoldMixup, create_mixup, list_mixups, register_mixup
from .timm_compat import MixupMethod, create_timm_mixup, is_mixup_method, mixup_arg
