"""Mixing methods behind timm's Mixup interface: mixup, CutMix, Manifold Mixup, AlignMixup, Co-Mixup, PuzzleMix and
SaliencyMix, by name.

``mixup_fn = create_mixup(name, model=model, **kwargs)``; ``x, target = mixup_fn(x, target)``; every
mixing function is a context manager (``with create_mixup(...) as mix:`` removes its hooks at the end).
The method contract is ``MixupBase`` (``base.py``); docs/mixing.md says how to add a method. Internals
(layer resolution, hooks, checks) stay importable from their modules.
"""

from .alignmixup import AlignMixup, align_mix_features, feature_points, flip_pair_plans
from .base import PAIRINGS, Draw, MixupBase
from .comixup import CoMixup, CoMixupDraw
from .factory import (
    create_mixup,
    get_mixup_class,
    list_mixups,
    mixup_preset,
    register_mixup,
    unregister_mixup,
)
from .feature_mix import FeatureMixupBase
from .input_mix import InputMixup
from .manifold import ManifoldMixup, manifold_mix_features
from .puzzlemix import PuzzleMix, PuzzleMixDraw
from .saliency import GradientSaliencyMixupBase, input_gradient
from .saliencymix import SaliencyMix, SaliencyMixDraw
from .targets import mix_inputs, soft_targets
from .transform import BatchMix

__all__ = [
    "PAIRINGS",
    "AlignMixup",
    "BatchMix",
    "CoMixup",
    "CoMixupDraw",
    "Draw",
    "FeatureMixupBase",
    "GradientSaliencyMixupBase",
    "InputMixup",
    "ManifoldMixup",
    "PuzzleMix",
    "PuzzleMixDraw",
    "SaliencyMix",
    "SaliencyMixDraw",
    "MixupBase",
    "align_mix_features",
    "create_mixup",
    "feature_points",
    "flip_pair_plans",
    "get_mixup_class",
    "input_gradient",
    "list_mixups",
    "manifold_mix_features",
    "mix_inputs",
    "mixup_preset",
    "register_mixup",
    "soft_targets",
    "unregister_mixup",
]
