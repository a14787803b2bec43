"""Hook arming machinery shared by the feature-space methods (manifold mixup, AlignMixup).

A mixup call *arms* one layer with a mixing function; the next training forward of the model runs the
function on that layer's output, once, and disarms. Stock models need no edits: the hooks are plain
``register_forward_hook`` hooks on the unwrapped model's modules.

Rules, each for a reason:

* Eval mode (``model.eval()``) never mixes and does not consume the armed mix, so a validation pass
  between the mixup call and the training forward changes nothing.
* If a training forward finishes without reaching the armed layer (timm's ResNet gradient
  checkpointing calls ``checkpoint_seq(..., flatten=True)``, which runs the blocks of ``layer4``
  without calling ``layer4`` itself), the root hook raises: the targets were already mixed, so training
  on unmixed features would be silently wrong.
* Activation checkpointing that re-runs the armed layer during backward gets the *same* mix again
  (the "replay"), so the recomputed activations match the forward ones.
* The hook bodies are excluded from torch.compile tracing (``torch.compiler.disable``): the graph breaks
  at the mixed layer instead of recompiling for every new lam, direction or armed state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .layers import INPUT, get_layer, unwrap_model

__all__ = ["FeatureMixHooks", "MixFn", "check_feature_output"]

MixFn = Callable[[torch.Tensor], torch.Tensor]


def _in_backward() -> bool:
    # The autograd engine sets a graph task id while it runs backward, which is when both reentrant
    # and non-reentrant checkpointing recompute their segment.
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def check_feature_output(layer: str, output: Any, batch_size: int, ndims: Sequence[int]) -> torch.Tensor:
    """Checks that a hooked layer produced a batched tensor of an accepted rank.

    Args:
        layer: The layer name (for the message).
        output: What the layer returned.
        batch_size: The batch size the mix was armed for.
        ndims: Accepted numbers of dimensions (4: feature map, 3: token set, 2: vectors).

    Returns:
        The output, typed.

    Raises:
        TypeError: The output is not a tensor, or has a rank the method cannot mix.
        ValueError: The output's batch size differs from the armed batch.
    """
    kinds = {4: "a (B, C, H, W) feature map", 3: "a (B, N, C) token set", 2: "(B, C) vectors"}
    accepted = " or ".join(kinds.get(n, f"{n}-d") for n in ndims)
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"layer {layer!r} returns {type(output).__name__}, not a tensor; this method mixes {accepted}. "
            "Pick a layer whose output is one tensor (e.g. a stage or block, not a head returning a tuple)."
        )
    if output.ndim not in ndims:
        raise TypeError(
            f"layer {layer!r} returns a tensor of shape {tuple(output.shape)}; this method mixes {accepted}. "
            "Pick a layer before global pooling (for timm models, a feature_info stage)."
        )
    if output.shape[0] != batch_size:
        raise ValueError(
            f"layer {layer!r} returned batch size {output.shape[0]}, but the mixup call was armed for "
            f"{batch_size}; call the mixup function on the same batch that the model runs next"
        )
    return output


class FeatureMixHooks:
    """Forward hooks on candidate layers; an armed mix is consumed by the next training forward.

    Args:
        model: The model (DDP / Accelerate / torch.compile wrappers are looked through).
        layers: Resolved module names that may be armed (``"input"`` is ignored: it needs no hook).
    """

    def __init__(self, *, model: nn.Module, layers: Sequence[str]) -> None:
        if type(model).__name__ == "DataParallel":
            raise TypeError(
                "nn.DataParallel splits the batch across replicas running in threads, so the flip(0) pairing "
                "and the one-shot hook would act per replica; use DistributedDataParallel (one process per device)"
            )
        self.model = unwrap_model(model)
        self.layers = tuple(name for name in layers if name != INPUT)
        self.num_fired = 0  # number of armed mixes consumed, for tests and debugging
        self._pending: tuple[str, MixFn] | None = None
        self._replay: tuple[str, MixFn] | None = None
        self._modules = {name: get_layer(self.model, name) for name in self.layers}
        self._handles = [module.register_forward_hook(self._layer_hook(name)) for name, module in self._modules.items()]
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre_hook))
        self._handles.append(self.model.register_forward_hook(self._root_post_hook))

    @property
    def armed(self) -> str | None:
        """The armed layer name, or None."""
        return None if self._pending is None else self._pending[0]

    def arm(self, layer: str, mix_fn: MixFn) -> None:
        """Makes the next training forward replace ``layer``'s output with ``mix_fn(output)``."""
        if layer not in self.layers:
            raise ValueError(f"layer {layer!r} has no hook; hooked layers: {', '.join(self.layers)}")
        if self._pending is not None:
            warnings.warn(
                f"the mix armed for layer {self._pending[0]!r} was never consumed by a training forward "
                "(the mixup function was called twice without model(x) in between); the new call replaces it",
                RuntimeWarning,
                stacklevel=3,
            )
        self._pending = (layer, mix_fn)
        self._replay = None

    def disarm(self) -> None:
        """Drops any armed mix (and the replay kept for checkpoint recomputation)."""
        self._pending = None
        self._replay = None

    def remove(self) -> None:
        """Removes all hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.disarm()

    def _layer_hook(self, name: str) -> Callable[[nn.Module, Any, Any], Any]:
        @torch.compiler.disable
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            # A deepcopy of the model (an EMA copy made after this object) carries the hooks along; only
            # the modules registered here take part.
            if module is not self._modules.get(name) or not self.model.training:
                return None
            pending = self._pending
            if pending is not None and pending[0] == name:
                self._pending = None
                self._replay = pending
                self.num_fired += 1
                return pending[1](output)
            replay = self._replay
            if pending is None and replay is not None and replay[0] == name and _in_backward():
                return replay[1](output)  # checkpoint recomputation: the same mix as in forward
            return None

        return hook

    @torch.compiler.disable
    def _root_pre_hook(self, module: nn.Module, args: Any) -> None:
        if module is self.model and not _in_backward():
            self._replay = None  # a new forward: the previous step's mix must not be replayed

    @torch.compiler.disable
    def _root_post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if module is not self.model or self._pending is None or not module.training or _in_backward():
            return
        layer = self._pending[0]
        self._pending = None
        children = [child for child, _ in get_layer(self.model, layer).named_children()]
        block = f"{layer}.{children[-1]}" if children else "a block inside the stage"
        raise RuntimeError(
            f"a mix was armed for layer {layer!r} but the training forward finished without calling that "
            "module, so the mixed targets would meet unmixed features. Most likely gradient checkpointing "
            "bypasses it (timm's ResNet runs checkpoint_seq(flatten=True) over the blocks of each stage): "
            f"call model.set_grad_checkpointing(False), or use a block inside the stage ({block!r}) as the "
            "layer, or check that the model's forward calls this module."
        )
