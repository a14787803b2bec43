"""AlignMixup/AE (Venkataramanan et al., CVPR 2022): AlignMixup plus a decoder that reconstructs the input
from the clean feature map of the mixed layer, trained jointly, whose images the classifier never sees.

The paper's second contribution: a vanilla autoencoder improves the representation under mixup without the
classifier seeing decoded clean or mixed images. The decoder (``mixkit.mix.decoder.FeatureDecoder``) reads
the feature map at the layer AlignMixup aligns (timm ``feature_info[-1]`` by default), as that layer computes
it from the clean batch, before any mixing; its reconstruction of the (normalised) input is scored by the
mean squared error, weighted by ``recon_weight``, and added to the classification loss (``extra_loss()``).
Its gradient reaches the encoder (the layers up to the mixed one), which is how the autoencoder shapes the
representation; ``detach_encoder=True`` stops it there (a decoder for pictures only, like the one the
paper's Figure 1 uses). Decoded images only enter that loss: never the classifier, never the mixing.

Which steps train it: those whose layer output is clean, the feature branch (the hook reads the output
before AlignMixup's mix replaces it) and the unmixed steps (``mixup_enabled`` False, ``prob`` < 1). The
input-mixup branch has no clean features of the batch, so it leaves the decoder unused; engines average
the decoder's gradients across processes themselves (``mixkit.mix.parts``), so that is no DDP error.
docs/mixing.md says which of these choices are the paper's and which are mixkit's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .alignmixup import AlignMixup
from .base import Draw
from .decoder import FeatureDecoder, mirrored_channels
from .hooks import check_feature_output
from .layers import feature_info_entries, get_layer, infer_map_layout
from .targets import Lam

__all__ = ["AlignMixupAE", "layer_geometry"]


def _in_chans(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def layer_geometry(model: nn.Module, layer: str, *, in_chans: int) -> tuple[int, int]:
    """(channels, reduction) of ``layer``'s feature map: from timm's ``feature_info`` where it lists the
    layer, else measured by one eval-mode, no-grad forward of a zero image (BatchNorm statistics and every
    module's training mode left as they were).

    Raises:
        ValueError: The layer's output is not a feature map.
    """
    entry = next((e for e in feature_info_entries(model) if e["module"] == layer), None)
    if entry is not None:
        return int(entry["num_chs"]), int(entry["reduction"])
    cfg = getattr(model, "pretrained_cfg", None) or {}
    side = int((cfg.get("input_size") or (in_chans, 64, 64))[-1])
    shapes: list[tuple[int, ...]] = []
    handle = get_layer(model, layer).register_forward_hook(
        lambda m, a, out: shapes.append(tuple(out.shape)) if isinstance(out, torch.Tensor) else None)
    modes = {m: m.training for m in model.modules()}
    param = next(iter(model.parameters()), None)
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, side, side, device=None if param is None else param.device,
                              dtype=None if param is None else param.dtype))
    finally:
        handle.remove()
        for module, mode in modes.items():
            module.training = mode
    if not shapes or len(shapes[0]) != 4:
        raise ValueError(f"alignmixup_ae decodes a (B, C, h, w) feature map, but layer {layer!r} gives "
                         f"{shapes[0] if shapes else 'no tensor'}; pick a convolutional stage (timm feature_info)")
    layout = infer_map_layout(model, layer, shapes[0])
    channels, height = (shapes[0][1], shapes[0][2]) if layout == "nchw" else (shapes[0][3], shapes[0][1])
    return int(channels), max(1, round(side / height))


class AlignMixupAE(AlignMixup):
    """AlignMixup with a jointly trained decoder at the mixed layer (AlignMixup/AE); see the module docstring.

    Args:
        recon_weight: Weight of the reconstruction loss (mean squared error against the normalised input)
            added to the classification loss.
        detach_encoder: Train the decoder on detached features: the encoder gets no reconstruction gradient
            (a decoder for pictures only, as in the paper's Figure 1, which does not change the classifier).
        decoder_channels: Width of each x2 upsampling block (ceil(log2(reduction)) of them). None: the
            encoder's stage widths mirrored (``mixkit.mix.decoder.mirrored_channels``).
        in_chans: Channels of the model's input, which the decoder reconstructs. None: those of the model's
            first convolution.
        **kwargs: ``AlignMixup``'s arguments (one layer: the decoder reads the layer that is aligned).
    """

    method = "alignmixup_ae"
    extra_loss_name = "recon_loss"

    def __init__(self, *, recon_weight: float = 0.1, detach_encoder: bool = False,
                 decoder_channels: Sequence[int] | None = None, in_chans: int | None = None, **kwargs: Any) -> None:
        if not (isinstance(recon_weight, int | float) and math.isfinite(recon_weight) and recon_weight > 0):
            raise ValueError(f"recon_weight must be a finite number > 0 (the reconstruction loss's weight), got "
                             f"{recon_weight!r}; for AlignMixup without the decoder use create_mixup('alignmixup')")
        if in_chans is not None and int(in_chans) < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        super().__init__(**kwargs)
        try:
            if len(self.layers) != 1:
                raise ValueError(f"alignmixup_ae decodes one layer, the one it aligns; got layers {list(self.layers)}: "
                                 "pass a single layer")
            self.layer = self.layers[0]
            self.in_chans = int(in_chans) if in_chans is not None else _in_chans(self.model)
            channels, reduction = layer_geometry(self.model, self.layer, in_chans=self.in_chans)
            param = next(iter(self.model.parameters()), None)
            if decoder_channels is None:
                stages = [(int(e["reduction"]), int(e["num_chs"])) for e in feature_info_entries(self.model)]
                decoder_channels = mirrored_channels(channels, reduction, stages)
            self.decoder = FeatureDecoder(in_channels=channels, out_channels=self.in_chans, reduction=reduction,
                                          channels=decoder_channels)
            if param is not None:
                self.decoder.to(device=param.device, dtype=param.dtype)
        except Exception:
            self.remove()  # a bad argument leaves the model as it was
            raise
        self.recon_weight, self.detach_encoder = float(recon_weight), bool(detach_encoder)
        self._clean_input: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None
        # Before AlignMixup's mixing hook on the same module, so it reads the layer's clean output.
        self.add_model_hook(get_layer(self.model, self.layer), self._reconstruct, prepend=True)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"decoder": self.decoder}

    def apply(self, x: torch.Tensor, target: torch.Tensor, draw: Draw, lam: Lam,
              partner: torch.Tensor | None) -> torch.Tensor:
        # The input branch feeds a mixed input: the layer never sees this batch's clean features.
        self._clean_input = None if draw.branch == "input" else x.detach()
        self._loss = None
        return super().apply(x, target, draw, lam, partner)

    def _reconstruct(self, module: nn.Module, args: Any, output: Any) -> None:
        target = self._clean_input
        if target is None or not (module.training and torch.is_grad_enabled()):
            return  # evaluation forwards, checkpoint recomputation (already consumed), input-branch steps
        self._clean_input = None
        output = check_feature_output(self.layer, output, target.shape[0], ndims=(4,))
        self._loss = self.recon_weight * self.reconstruction_loss(output.detach() if self.detach_encoder else output,
                                                                  target)

    def decode(self, features: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        """The decoder's image of a feature map of the layer (NCHW or NHWC as the layer gives it)."""
        layout = self._layout(self.layer, features)
        if layout == "nlc":
            raise ValueError(f"alignmixup_ae decodes feature maps, but layer {self.layer!r} gives tokens "
                             f"{tuple(features.shape)}; use a convolutional model")
        if layout == "nhwc":
            features = features.permute(0, 3, 1, 2)
        return self.decoder(features, size)

    def reconstruction_loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unweighted mean squared error between the decoded ``features`` and ``target``, in fp32 under AMP."""
        decoded = self.decode(features, target.shape[-2:])
        dtype = torch.promote_types(decoded.dtype, torch.float32)
        return F.mse_loss(decoded.to(dtype), target.to(dtype))

    def extra_loss(self) -> torch.Tensor | None:
        loss, self._loss = self._loss, None
        return loss
