"""Hook arming machinery shared by the feature-space methods (manifold mixup, AlignMixup).

A mixup call *arms* one layer with a mixing function; the next training forward of the model runs the
function on that layer's output, once, and disarms. Stock models need no edits: the hooks are plain
``register_forward_hook`` hooks on the unwrapped model's modules.

Rules, each for a reason (mixed targets must never meet unmixed features silently):

* The mix fires on the first forward of the model that runs in training mode *with grad enabled*.
  ``model.eval()`` forwards and forwards under ``torch.no_grad()`` / ``torch.inference_mode()`` (a
  validation pass, logging, a teacher) never mix and leave the armed mix in place. The mode is read when
  the model's own forward starts, so a block that reentrant checkpointing runs under no_grad inside a
  training forward still mixes.
* If a training forward finishes without reaching the armed layer, the root hook raises and names the
  likely cause (gradient checkpointing that bypasses the module, or torch.compile code traced before the
  hooks existed): the targets were already mixed.
* A new arming while a mix is still armed warns and names why the first one was not used (eval mode,
  grad disabled, or no forward at all). A second mixing function arming the same model is an error.
* Activation checkpointing that re-runs the armed layer during backward gets the *same* mix again
  (the "replay"), so the recomputed activations match the forward ones.
* The hooks are shared, not copied, by ``copy.deepcopy(model)`` (an EMA copy): they ignore the copy's
  modules, and a training forward of the copy is named as the cause when an armed mix goes unused.
  Pickling a model with hooks attached (``torch.save(model)``) is refused with an error that says to call
  ``remove()`` first; after ``remove()`` the hooks a copy still holds are inert and pickle as no-ops.
* A mix left unused because no hooked forward ran, while torch.compile has compiled code in the process
  (a compiled train step traced before the hooks), is named as such.
* The hook bodies are excluded from torch.compile tracing (``torch.compiler.disable``): the graph breaks
  at the mixed layer instead of recompiling for every new lam, direction or armed state.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .checks import check_output_classes
from .layers import INPUT, get_layer, unwrap_model

__all__ = ["FeatureMixHooks", "MethodHook", "MixFn", "check_feature_output"]

MixFn = Callable[[torch.Tensor], torch.Tensor]

PICKLE_ERROR = (
    "mixkit's mixing hooks are attached to this model and hold the mixing state, so they cannot be pickled: "
    "call mixup_fn.remove() (or leave its `with create_mixup(...)` block) before torch.save(model), or save "
    "model.state_dict() instead"
)

# Live hook sets per model, to refuse a second mixing function arming the same model.
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet[FeatureMixHooks]] = weakref.WeakKeyDictionary()


def _in_backward() -> bool:
    # The autograd engine sets a graph task id while it runs backward, which is when both reentrant
    # and non-reentrant checkpointing recompute their segment.
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def _compiled(model: nn.Module) -> bool:
    """Whether torch.compile holds compiled code for the model class's forward (private API: best effort)."""
    try:
        from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list
    except ImportError:
        return False
    code = getattr(type(model).forward, "__code__", None)
    try:
        return code is not None and len(_debug_get_cache_entry_list(code)) > 0
    except Exception:  # noqa: BLE001 - a diagnostic must never mask the error it explains
        return False


def _dynamo_compiled_anything() -> bool:
    """Whether torch.compile compiled a graph in this process (its counters; private API: best effort)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return False
    return bool(counters["stats"].get("unique_graphs", 0))


class _Hook:
    """One of mixkit's hooks: shared by deep copies of the model, refused by pickle with a clear message."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    @torch.compiler.disable
    def __call__(self, *args: Any) -> Any:
        return None if self.fn is None else self.fn(*args)

    def __deepcopy__(self, memo: dict) -> _Hook:
        return self  # the hook body checks which module called it, so a copy's modules are ignored

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self.fn is None:  # removed: an inert hook that a deep copy still holds pickles as a no-op
            return (_Hook, (None,))
        raise TypeError(PICKLE_ERROR)


class MethodHook:
    """A forward hook a method keeps on one module for its own use (capturing features for an extra loss),
    under the same rules as the mixing hooks: deep copies of the model (an EMA) share it and are ignored by
    it, pickling the model is refused while it is attached, and after ``remove()`` it is inert.

    Args:
        module: The module (of the unwrapped model) to hook.
        fn: ``fn(module, args, output)``; its return value replaces the output unless None.
        prepend: Run before the module's other forward hooks (a mixing hook among them), so ``fn`` sees the
            module's own, unmixed output.
    """

    def __init__(self, module: nn.Module, fn: Callable[[nn.Module, Any, Any], Any], *, prepend: bool = False) -> None:
        self._hook = _Hook(lambda m, args, output: fn(m, args, output) if m is module else None)
        self._handle = module.register_forward_hook(self._hook, prepend=prepend)

    def remove(self) -> None:
        self._handle.remove()
        self._hook.fn = None


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
        num_classes: The targets' number of classes, checked against the model's (B, K) output at the
            first training forward (None: not checked).
    """

    def __init__(self, *, model: nn.Module, layers: Sequence[str], num_classes: int | None = None) -> None:
        self.model = unwrap_model(model)
        self.layers = tuple(name for name in layers if name != INPUT)
        self.num_classes = num_classes
        self.num_fired = 0  # number of armed mixes consumed, for tests and debugging
        self.removed = False
        self._pending: tuple[str, MixFn] | None = None
        self._replay: tuple[str, MixFn] | None = None
        self._skipped: str | None = None  # why forwards since arming did not mix: "eval" or "no_grad"
        self._forward_active: bool | None = None  # mixing allowed in the running forward (None: none runs)
        self._output_checked = num_classes is None
        self._forwards_seen = 0  # training forwards of the model whose hooks ran since the last arming
        self._copy_trained = False  # a deep copy of the model ran a training forward since the last arming
        self._modules = {name: get_layer(self.model, name) for name in self.layers}
        layer_hooks = {name: _Hook(self._make_layer_hook(name)) for name in self._modules}
        pre, post = _Hook(self._root_pre_hook), _Hook(self._root_post_hook)
        self._hooks = [*layer_hooks.values(), pre, post]  # kept so that remove() can make them inert
        self._handles = [self._modules[name].register_forward_hook(hook) for name, hook in layer_hooks.items()]
        self._handles += [self.model.register_forward_pre_hook(pre), self.model.register_forward_hook(post)]
        _ATTACHED.setdefault(self.model, weakref.WeakSet()).add(self)

    @property
    def armed(self) -> str | None:
        """The armed layer name, or None."""
        return None if self._pending is None else self._pending[0]

    def arm(self, layer: str, mix_fn: MixFn) -> None:
        """Makes the next training forward replace ``layer``'s output with ``mix_fn(output)``.

        Raises:
            RuntimeError: The hooks were removed, or another mixing function has a mix armed on this model.
        """
        self.check_attached()
        if layer not in self.layers:
            raise ValueError(f"layer {layer!r} has no hook; hooked layers: {', '.join(self.layers)}")
        for other in _ATTACHED.get(self.model, ()):
            if other is not self and other._pending is not None:
                raise RuntimeError(
                    f"another mixkit mixing function has a mix armed on layer {other._pending[0]!r} of this model, "
                    "so the next forward would mix twice; use one mixing function per model (call remove() on "
                    "the old one, or create it with `with create_mixup(...) as mix:`)"
                )
        if self._pending is not None:
            warnings.warn(self._unconsumed_warning(), RuntimeWarning, stacklevel=3)
        self._pending = (layer, mix_fn)
        self._replay = None
        self._skipped = None
        self._forwards_seen = 0
        self._copy_trained = False

    def check_attached(self) -> None:
        """Raises RuntimeError if ``remove()`` was called."""
        if self.removed:
            raise RuntimeError(
                "this mixing function's hooks were removed (remove(), or the end of its `with` block), so it "
                "can no longer mix hidden features; create a new one with create_mixup(..., model=model)"
            )

    def disarm(self) -> None:
        """Drops any armed mix (and the replay kept for checkpoint recomputation)."""
        self._pending = None
        self._replay = None
        self._skipped = None

    def remove(self) -> None:
        """Removes all hooks from the model; arming afterwards is an error."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for hook in self._hooks:  # deep copies of the model keep these objects: make them inert
            hook.fn = None
        self.disarm()
        self.removed = True
        attached = _ATTACHED.get(self.model)
        if attached is not None:
            attached.discard(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(PICKLE_ERROR)

    def _mixing_allowed(self) -> bool:
        if self._forward_active is not None:  # inside the model's own forward: its mode at the start decides
            return self._forward_active
        return self.model.training and torch.is_grad_enabled()

    def _make_layer_hook(self, name: str) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if module is not self._modules.get(name):  # a deep copy's module (EMA): never mixed
                return None
            pending = self._pending
            if pending is not None and pending[0] == name and not _in_backward() and self._mixing_allowed():
                self._pending = None
                self._replay = pending
                self.num_fired += 1
                return pending[1](output)
            replay = self._replay
            if pending is None and replay is not None and replay[0] == name and _in_backward():
                return replay[1](output)  # checkpoint recomputation: the same mix as in forward
            return None

        return hook

    def _root_pre_hook(self, module: nn.Module, args: Any) -> None:
        if _in_backward():
            return
        active = module.training and torch.is_grad_enabled()
        if module is not self.model:  # a deep copy (EMA, teacher): never mixed, but a trained copy is a cause
            self._copy_trained |= active and self._pending is not None
            return
        self._forward_active = active
        if active:
            self._forwards_seen += 1
            self._replay = None  # a new training forward: the previous step's mix must not be replayed
        elif self._pending is not None:
            self._skipped = "eval" if not module.training else "no_grad"

    def _root_post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if module is not self.model or _in_backward():
            return
        active, self._forward_active = self._forward_active, None
        if not active:
            return
        if not self._output_checked and isinstance(output, torch.Tensor) and output.ndim == 2:
            self._output_checked = True
            try:
                check_output_classes(output, self.num_classes)
            except ValueError:
                self.disarm()
                raise
        if self._pending is not None:
            layer = self._pending[0]
            self._pending = None
            raise RuntimeError(self._bypass_message(layer))

    def _unconsumed_warning(self) -> str:
        layer = self._pending[0] if self._pending else "?"
        causes = {
            "eval": "every forward since then ran in eval mode (model.eval()), which never mixes: call "
            "model.train() before the training forward",
            "no_grad": "every forward since then ran with gradients disabled (torch.no_grad() or "
            "torch.inference_mode()), which never mixes: run the training forward with grad enabled",
        }
        if self._copy_trained:
            cause = ("a deep copy of the model (copy.deepcopy: an EMA or teacher copy) ran a training forward, "
                     "and copies are never mixed: train the model that was given to create_mixup")
        else:
            cause = causes.get(self._skipped or "", "the mixup function was called twice without a training "
                               "forward model(x) in between")
            if self._skipped is None and self._forwards_seen == 0 and _dynamo_compiled_anything():
                cause += (", or model(x) ran inside a function that torch.compile traced before create_mixup "
                          "(compiled code does not run hooks added later): create the mixing function before "
                          "the first compiled call, or call torch.compiler.reset() after creating it")
        return f"the mix armed for layer {layer!r} was never consumed: {cause}. The new call replaces it."

    def _bypass_message(self, layer: str) -> str:
        head = (
            f"a mix was armed for layer {layer!r} but the training forward finished without running that "
            "module's hook, so the mixed targets would meet unmixed features. "
        )
        if getattr(self.model, "grad_checkpointing", False):
            children = [child for child, _ in get_layer(self.model, layer).named_children()]
            block = f"{layer}.{children[-1]}" if children else "a block inside the stage"
            return head + (
                "Gradient checkpointing is on and bypasses the module (timm's ResNet runs "
                "checkpoint_seq(flatten=True) over the blocks of each stage): call "
                f"model.set_grad_checkpointing(False), or use a block inside the stage ({block!r}) as the layer."
            )
        if _compiled(self.model):
            return head + (
                "The model runs through torch.compile, and its compiled code was traced before mixkit's hooks "
                f"were attached (an earlier compiled forward of this {type(self.model).__name__} or of another "
                "model of the same class); compiled code does not run hooks added later. Create the mixing "
                "function before the first compiled forward, or call torch.compiler.reset() after creating it."
            )
        return head + "Check that the model's forward calls this module, or pick a layer it calls."
