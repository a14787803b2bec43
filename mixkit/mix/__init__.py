"""Mixing methods behind timm's Mixup interface: mixup, CutMix, Manifold Mixup and AlignMixup.

``mixup_fn = create_mixup(name, model=model, **kwargs)``; ``x, target = mixup_fn(x, target)``.
"""

from .alignmixup import AlignMixup, align_mix_features, feature_points, flip_pair_plans
from .factory import create_mixup, list_mixups, register_mixup
from .feature_mix import FeatureMixupBase, mix_inputs
from .hooks import FeatureMixHooks
from .input_mix import InputMixup
from .layers import default_feature_layer, feature_info_names, resolve_layer, resolve_layers, unwrap_model
from .manifold import ManifoldMixup, default_manifold_layers, manifold_mix_features

__all__ = [
    "AlignMixup",
    "FeatureMixHooks",
    "FeatureMixupBase",
    "InputMixup",
    "ManifoldMixup",
    "align_mix_features",
    "create_mixup",
    "default_feature_layer",
    "default_manifold_layers",
    "feature_points",
    "feature_info_names",
    "flip_pair_plans",
    "list_mixups",
    "manifold_mix_features",
    "mix_inputs",
    "register_mixup",
    "resolve_layer",
    "resolve_layers",
    "unwrap_model",
]
