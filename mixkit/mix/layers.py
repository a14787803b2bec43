"""Layer resolution for feature-space mixing.

Turns the layer spec a user gives (a module name, an index into timm's ``feature_info`` or ``"input"``)
into a module name of the unwrapped model, and says which names exist when the spec is wrong.
Works for timm models (``feature_info`` and module names: resnet ``layer4``, convnext ``stages.3``,
vit ``blocks.11``) and for any ``nn.Module`` through its ``named_modules()`` names.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = [
    "INPUT",
    "LayerSpec",
    "default_feature_layer",
    "feature_info_entries",
    "feature_info_names",
    "get_layer",
    "infer_map_layout",
    "resolve_layer",
    "resolve_layers",
    "unwrap_model",
]

INPUT = "input"
"""Pseudo layer name: mix the model input itself (plain input mixup)."""

LayerSpec = str | int

# Wrappers whose wrapped module must be looked through. torch.compile's OptimizedModule keeps the
# original under ``_orig_mod``; DDP, DataParallel, FSDP and DeepSpeed's engine (what Accelerate's
# ``prepare`` returns on multi-process runs) keep it under ``module``. Matched by class name so that no
# optional package has to be imported.
_MODULE_WRAPPERS = ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel", "DeepSpeedEngine")
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _wrapped(model: nn.Module) -> nn.Module | None:
    orig = getattr(model, "_orig_mod", None)
    if isinstance(orig, nn.Module):
        return orig
    if type(model).__name__ in _MODULE_WRAPPERS and isinstance(getattr(model, "module", None), nn.Module):
        return model.module
    return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strips DistributedDataParallel / DataParallel / Accelerate / torch.compile wrappers.

    Hooks must sit on the modules that really run; a wrapper's ``forward`` calls the wrapped module, so
    hooks on the wrapped modules fire under every wrapper.

    Args:
        model: A model, possibly wrapped (several times).

    Returns:
        The innermost module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    while (inner := _wrapped(model)) is not None:
        model = inner
    return model


def feature_info_entries(model: nn.Module) -> list[dict]:
    """timm's ``feature_info`` stages, shallowest first, as dicts with 'module', 'num_chs', 'reduction'.

    The one place that reads timm's two forms: the list of dicts of a classifier and the ``FeatureInfo``
    object of a ``features_only`` model. A value an entry lacks is None; other models give [].
    """
    info = getattr(unwrap_model(model), "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "module_name"):  # timm FeatureInfo (features_only models)
        return [dict(module=m, num_chs=c, reduction=r)
                for m, c, r in zip(info.module_name(), info.channels(), info.reduction(), strict=True)]
    try:
        return [dict(module=str(e["module"]), num_chs=e.get("num_chs"), reduction=e.get("reduction")) for e in info]
    except (TypeError, KeyError, AttributeError):
        return []


def feature_info_names(model: nn.Module) -> list[str]:
    """Module names of timm's ``feature_info`` stages, shallowest first ([] for other models)."""
    return [entry["module"] for entry in feature_info_entries(model)]


def infer_map_layout(model: nn.Module, layer: str, shape: Sequence[int]) -> str:
    """Whether a 4-d output of ``layer`` is 'nchw' or 'nhwc' (timm Swin and MambaOut stages are NHWC).

    Evidence, strongest first: the stage's channel count in timm's ``feature_info``; the model's
    ``output_fmt`` attribute (timm models whose stages keep channels last say 'NHWC'); a square map in one
    reading but not the other. Without any, PyTorch's convention, NCHW.
    """
    inner = unwrap_model(model)
    channels = next((e["num_chs"] for e in feature_info_entries(inner) if e["module"] == layer), None)
    if channels is not None and (shape[1] == channels) != (shape[3] == channels):
        return "nchw" if shape[1] == channels else "nhwc"
    fmt = getattr(inner, "output_fmt", None)
    if isinstance(fmt, str) and fmt.upper() in ("NCHW", "NHWC"):
        return fmt.lower()
    if shape[1] == shape[2] != shape[3]:
        return "nhwc"
    return "nchw"


def default_feature_layer(model: nn.Module) -> str:
    """The last feature stage before pooling (timm ``feature_info[-1]``), AlignMixup's default layer.

    Raises:
        ValueError: The model has no ``feature_info``; the message lists the module names to pick from.
    """
    names = feature_info_names(model)
    if not names:
        raise ValueError(
            f"{type(unwrap_model(model)).__name__} has no timm feature_info, so there is no default "
            f"feature layer; pass layers=('<module name>',). {_available(model)}"
        )
    return names[-1]


def _available(model: nn.Module) -> str:
    model = unwrap_model(model)
    stages = feature_info_names(model)
    # Names up to two levels deep keep the message readable (a ViT has hundreds of modules); any
    # deeper name from named_modules() is accepted too.
    shallow = [name for name, _ in model.named_modules() if name and name.count(".") <= 1]
    parts = []
    if stages:
        parts.append(f"feature_info stages (index 0..{len(stages) - 1}): {', '.join(stages)}")
    parts.append(f"modules: {', '.join(shallow) if shallow else '(none)'}")
    return (
        "Available layers: "
        + "; ".join(parts)
        + f"; or {INPUT!r} for the input (any name from model.named_modules() works)."
    )


def _strip_wrapper_prefix(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def resolve_layer(model: nn.Module, layer: LayerSpec) -> str:
    """Resolves one layer spec to a module name of the unwrapped model (or ``"input"``).

    Args:
        model: The model (wrappers are looked through).
        layer: A module name (``"layer4"``, ``"stages.3"``, ``"blocks.11"``; a ``module.`` or
            ``_orig_mod.`` prefix copied from a wrapped model is accepted), an int index into timm's
            ``feature_info`` (negative counts from the end), or ``"input"``.

    Returns:
        The module name, or ``"input"``.

    Raises:
        ValueError: The layer does not exist; the message lists the available names.
        TypeError: The spec is neither str nor int.
    """
    inner = unwrap_model(model)
    if isinstance(layer, bool) or not isinstance(layer, str | int):
        raise TypeError(f"a layer is a module name (str) or a feature_info index (int), got {layer!r}")
    if isinstance(layer, int):
        stages = feature_info_names(inner)
        if not stages:
            raise ValueError(
                f"layer index {layer} needs timm feature_info, which {type(inner).__name__} lacks; "
                f"pass a module name instead. {_available(inner)}"
            )
        if not -len(stages) <= layer < len(stages):
            raise ValueError(f"feature_info index {layer} is out of range. {_available(inner)}")
        return stages[layer]
    if layer == INPUT:
        return INPUT
    modules = dict(inner.named_modules())
    # A name copied from the wrapped model ("module.layer4") names the same module once unwrapped.
    name = layer if layer in modules else _strip_wrapper_prefix(layer)
    if not name or name not in modules:
        raise ValueError(f"layer {layer!r} does not exist in {type(inner).__name__}. {_available(inner)}")
    return name


def resolve_layers(model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]) -> tuple[str, ...]:
    """Resolves a layer spec or a set of them; duplicates are dropped, order kept."""
    if isinstance(layers, str | int):
        layers = (layers,)
    resolved = tuple(dict.fromkeys(resolve_layer(model, layer) for layer in layers))
    if not resolved:
        raise ValueError(f"an empty layer set was given. {_available(model)}")
    return resolved


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule of the unwrapped model called ``name`` (already resolved)."""
    return unwrap_model(model).get_submodule(name)
