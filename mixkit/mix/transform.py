"""mixkit's input-space methods as a torchvision.transforms.v2 transform: ``(images, labels) -> (images, soft_labels)``.

For torchvision users: ``BatchMix`` takes the place of ``v2.MixUp`` / ``v2.CutMix`` / ``v2.RandomChoice``
of the two, after batching (as a DataLoader's ``collate_fn`` through ``BatchMix.collate``, or on a batch
in the training loop, alone or last in a ``v2.Compose``). The mixing is the named mixkit method's (timm's
draws and soft targets, label smoothing, odd batches, the random pairing), so a torchvision loop gets the
same mixes as ``mixkit-train``. Methods that mix inside the model or read its gradient (``alignmixup``,
``manifold`` and every method with ``needs_model``) cannot work on a batch alone and are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten  # what torchvision's v2 transforms flatten with
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

from .factory import create_mixup, get_mixup_class

__all__ = ["BatchMix"]


class BatchMix(v2.Transform):
    """A mixkit input method on a batch: images (B, C, H, W) and integer labels (B,) in, mixed images and
    soft labels (B, num_classes) out.

    Args:
        method: A registered input-space method ('mixup', 'cutmix', 'mixup_cutmix', ...).
        num_classes: Classes of the labels (the soft labels' width).
        **kwargs: The method's arguments (timm's Mixup arguments: mixup_alpha, cutmix_alpha, prob,
            label_smoothing, mode, ...; ``mixkit.mix.mixup_preset(method)`` lists the defaults).

    Like torchvision's MixUp/CutMix, the inputs may be ``(images, labels)``, a tuple or a dict holding them
    (the labels found as the one 1-D integer tensor, the images as the one 4-D tensor or ``tv_tensors.Image``),
    and the output has the input's structure. Inputs are not modified (mixkit's methods mix in place, as
    timm's; this transform mixes a copy, as torchvision's transforms do).
    """

    def __init__(self, method: str = "mixup_cutmix", *, num_classes: int, **kwargs: Any) -> None:
        super().__init__()
        cls = get_mixup_class(method)
        if getattr(cls, "needs_model", False):
            raise ValueError(
                f"{method!r} mixes inside the model or reads its gradient, so it cannot run on a batch alone: "
                f"call create_mixup({method!r}, model=model, ...) in the training step instead (docs/mixing.md), "
                "or pick an input method for BatchMix ('mixup', 'cutmix', 'mixup_cutmix')")
        self.method = method
        self.mix = create_mixup(method, num_classes=num_classes, **kwargs)

    def forward(self, *inputs: Any) -> Any:
        flat, spec = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        images = self._find(flat, "images", lambda t: t.ndim == 4 and t.is_floating_point(),
                            "one float tensor (B, C, H, W) or tv_tensors.Image batch")
        labels = self._find(flat, "labels", lambda t: t.ndim == 1 and not t.is_floating_point(),
                            "one integer tensor (B,) of class indices")
        x, y = flat[images], flat[labels]
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"BatchMix: {x.shape[0]} images but {y.shape[0]} labels; pass one label per image")
        mixed, soft = self.mix(x.as_subclass(torch.Tensor).clone(), y)
        flat[images] = tv_tensors.wrap(mixed, like=x) if isinstance(x, tv_tensors.TVTensor) else mixed
        flat[labels] = soft
        return tree_unflatten(flat, spec)

    def collate(self, batch: list[Any]) -> Any:
        """A DataLoader ``collate_fn``: torch's default collation, then this transform on the batch."""
        return self(*default_collate(batch))

    @staticmethod
    def _find(flat: list[Any], what: str, match: Any, expected: str) -> int:
        found = [i for i, item in enumerate(flat) if isinstance(item, torch.Tensor) and match(item)]
        if len(found) != 1:
            kinds = [type(item).__name__ + (f"{tuple(item.shape)}/{item.dtype}" if isinstance(item, torch.Tensor) else "")
                     for item in flat]
            raise ValueError(f"BatchMix needs {expected} as its {what}; found {len(found)} among the inputs {kinds}")
        return found[0]

    def extra_repr(self) -> str:
        return f"method={self.method!r}, num_classes={self.mix.num_classes}"
