"""``mixkit viz --decoder``: mixes decoded into pictures, the layout of the paper's Figure 1.

For two images a and b and a run trained with a decoder (``--mixup alignmixup_ae``: ``decoder.safetensors``
in the run directory), one PNG: a, b and their decoded clean features in the first row; below, one row per
mix over lam = 0, 0.25, 0.5, 0.75, 1 (the weight of a), each decoded from the run's layer: input mixup
(the mixed image encoded, then decoded), manifold mixup (the features interpolated), and AlignMixup in both
directions (``align_mix_features``: keeping a's layout, 'to_a', and b's, 'to_b').

    mixkit viz --run output/demo/fashion_mnist_alignmixup_ae --decoder
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["DECODED_FIGURE_SIZE", "LAMS", "DecodedMixes", "decode_mixes", "load_run_decoder", "plot_decoded"]

LAMS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The lam values of the figure's columns (the weight of a)."""

DECODED_FIGURE_SIZE = (1100, 1180)
"""Width and height of the PNG in pixels."""

ROWS = (("input", "input mixup"), ("manifold", "manifold mixup"), ("to_a", "AlignMixup, a's layout (to_a)"),
        ("to_b", "AlignMixup, b's layout (to_b)"))
_DECODER_KEYS = ("layers", "decoder_channels", "in_chans")  # what fixes the decoder's shape
_DPI = 100


@dataclass
class DecodedMixes:
    """Everything the figure shows, as (C, H, W) pixels in [0, 1].

    Attributes:
        a: Image a.
        b: Image b.
        decoded_a: a's clean features decoded.
        decoded_b: b's clean features decoded.
        rows: Per mix ('input', 'manifold', 'to_a', 'to_b'), the decoded images at each of ``LAMS``.
        layer: The decoded layer.
    """

    a: torch.Tensor
    b: torch.Tensor
    decoded_a: torch.Tensor
    decoded_b: torch.Tensor
    rows: dict[str, list[torch.Tensor]]
    layer: str


def load_run_decoder(model: nn.Module, run_dir: str | os.PathLike, settings: dict[str, Any]) -> Any:
    """An AlignMixup/AE object on ``model`` holding the run's trained decoder (``decoder.safetensors``), in eval mode.

    Raises:
        FileNotFoundError: The run has no decoder (it was not trained with one).
    """
    from safetensors.torch import load_file

    from .mix import create_mixup

    weights = Path(run_dir) / "decoder.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir} has no decoder.safetensors: --decoder draws runs trained with a decoder "
                                f"(mixkit-train --mixup alignmixup_ae, or `make demo-ae`); this run used "
                                f"--mixup {settings.get('mixup')}")
    kwargs = {k: v for k, v in (settings.get("mixup_kwargs") or {}).items() if k in _DECODER_KEYS}
    mix = create_mixup("alignmixup_ae", model=model, num_classes=int(settings["num_classes"]), **kwargs)
    mix.decoder.load_state_dict(load_file(str(weights)))
    mix.decoder.eval()
    return mix


def decode_mixes(mix: Any, a: torch.Tensor, b: torch.Tensor, *, mean: tuple[float, ...], std: tuple[float, ...],
                 solver: str = "default", eps: float | None = None) -> DecodedMixes:
    """Decodes a, b and their mixes at each of ``LAMS`` through ``mix``'s decoder (no gradients, eval mode).

    Args:
        mix: An AlignMixup/AE object (``load_run_decoder``) on the trained model.
        a: (C, H, W) pixels in [0, 1].
        b: (C, H, W) pixels in [0, 1], same shape.
        mean: Normalisation mean the model was trained with, per channel.
        std: Normalisation std, per channel.
        solver: mixkit.ot solver of the AlignMixup rows.
        eps: Entropic regularisation (None: the solver's default).
    """
    from .mix import align_mix_features
    from .viz import layer_features

    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"a and b must be (C, H, W) images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    size = a.shape[-2:]
    # One eval-mode forward for a, b and the input mixes (BatchNorm in eval: each image as if alone).
    inputs = torch.stack([a, b, *(lam * a + (1 - lam) * b for lam in LAMS)])
    features = layer_features(mix.model, mix.layer, inputs, mean=mean, std=std)
    fa, fb, input_mixes = features[:1], features[1:2], features[2:]

    def decode(features: torch.Tensor) -> list[torch.Tensor]:
        images = mix.decode(features, size).float().cpu() * std_t + mean_t
        return list(images.clamp(0, 1))

    was_training = mix.decoder.training
    try:
        mix.decoder.eval()
        with torch.no_grad():
            rows: dict[str, list[torch.Tensor]] = {"input": decode(input_mixes)}
            rows["manifold"] = decode(torch.cat([lam * fa + (1 - lam) * fb for lam in LAMS]))
            for direction in ("to_a", "to_b"):
                rows[direction] = decode(torch.cat([align_mix_features(fa, fb, lam, direction=direction, solver=solver,
                                                                       eps=eps) for lam in LAMS]))
            decoded_a, decoded_b = decode(torch.cat([fa, fb]))
    finally:
        mix.decoder.train(was_training)
    return DecodedMixes(a=a, b=b, decoded_a=decoded_a, decoded_b=decoded_b, rows=rows, layer=mix.layer)


def plot_decoded(mixes: DecodedMixes, path: str | os.PathLike, *, title: str = "") -> Path:
    """Writes the figure (``DECODED_FIGURE_SIZE`` pixels) atomically and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import save_figure_atomic
    from .viz import show_image

    def show(ax: Any, img: torch.Tensor, name: str = "") -> None:
        show_image(ax, img, name, fontsize=10)

    fig, axes = plt.subplots(1 + len(ROWS), len(LAMS), dpi=_DPI,
                             figsize=(DECODED_FIGURE_SIZE[0] / _DPI, DECODED_FIGURE_SIZE[1] / _DPI))
    try:
        for ax, (img, name) in zip(axes[0], ((mixes.a, "a"), (mixes.b, "b"), (mixes.decoded_a, "a decoded"),
                                             (mixes.decoded_b, "b decoded")), strict=False):
            show(ax, img, name)
        axes[0, -1].axis("off")
        for r, (key, label) in enumerate(ROWS, start=1):
            for c, (lam, img) in enumerate(zip(LAMS, mixes.rows[key], strict=True)):
                show(axes[r, c], img, f"lam {lam:g}" if r == 1 else "")
            axes[r, 0].set_ylabel(label, fontsize=10)
        fig.suptitle(title or f"mixes decoded from '{mixes.layer}' (lam: weight of a)", fontsize=12)
        fig.tight_layout()
        return save_figure_atomic(fig, path, dpi=_DPI)
    finally:
        plt.close(fig)
