"""Mixing methods behind timm's Mixup interface: mixup, CutMix, Manifold Mixup and AlignMixup.

``mixup_fn = create_mixup(name, model=model, **kwargs)``; ``x, target = mixup_fn(x, target)``; every
mixing function is a context manager (``with create_mixup(...) as mix:`` removes its hooks at the end).
"""

from .alignmixup import PROJECTIONS, AlignMixup, align_mix_features, feature_points, flip_pair_plans
from .context import MixupContext
from .factory import accepted_arguments, create_mixup, list_mixups, mixup_preset, register_mixup
from .feature_mix import PAIRINGS, FeatureMixupBase, mix_inputs
from .hooks import FeatureMixHooks
from .input_mix import InputMixup
from .layers import (
    default_feature_layer,
    feature_info_entries,
    feature_info_names,
    infer_map_layout,
    resolve_layer,
    resolve_layers,
    unwrap_model,
)
from .manifold import ManifoldMixup, default_manifold_layers, manifold_mix_features
from .targets import LabelRangeCheck, soft_targets

__all__ = [
    "PAIRINGS",
    "PROJECTIONS",
    "AlignMixup",
    "FeatureMixHooks",
    "FeatureMixupBase",
    "InputMixup",
    "LabelRangeCheck",
    "ManifoldMixup",
    "MixupContext",
    "accepted_arguments",
    "align_mix_features",
    "create_mixup",
    "default_feature_layer",
    "default_manifold_layers",
    "feature_info_entries",
    "feature_info_names",
    "feature_points",
    "flip_pair_plans",
    "infer_map_layout",
    "list_mixups",
    "manifold_mix_features",
    "mix_inputs",
    "mixup_preset",
    "register_mixup",
    "resolve_layer",
    "resolve_layers",
    "soft_targets",
    "unwrap_model",
]
