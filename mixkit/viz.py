"""``mixkit viz``: AlignMixup's alignment made visible, in the spirit of the paper's Figure 1.

For two images a and b, one PNG (``FIGURE_SIZE`` pixels) with eight panels: a, b, input mixup, CutMix;
b carried onto a's layout through the transport plan, a carried onto b's layout; a chosen feature cell
of a, and the plan's row for that cell drawn over b (which cells of b it takes its features from).

"Carried through the plan" is shown in pixels at feature resolution: the plan is solved by
``mixkit.ot.transport_plan`` between the two images' feature maps at the AlignMixup layer (the
model's last feature stage, ``mixkit.mix.layers.default_feature_layer``), each image is cut into the
h x w patches that the feature cells cover, and each cell of a receives the plan-weighted average of
b's patches (rows of the plan normalised: the barycentric projection AlignMixup applies to features).

    mixkit viz                                    # the demo's model, two Fashion-MNIST test bags
    mixkit viz --run output/demo/<experiment> --image-a a.png --image-b b.png --cell 1 2
    mixkit viz --model resnet50 --checkpoint r50.pth --image-a a.jpg --image-b b.jpg --output fig.png

``--decoder`` draws the other half of Figure 1 instead, for a run trained with a decoder: the mixes decoded
into pictures (``mixkit.viz_decoded``).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEMO_OUTPUT", "FIGURE_SIZE", "Alignment", "add_parser", "align_images", "find_demo_run", "load_image",
           "plot_alignment", "run"]

FIGURE_SIZE = (1600, 840)
"""Width and height of the PNG in pixels."""

DEMO_OUTPUT = Path("output/demo")
"""Where ``make demo`` (recipes/fashion_mnist.py) writes its run directories."""

_DPI = 100

_DESCRIPTION = f"""AlignMixup's alignment made visible, in the spirit of the paper's Figure 1: one PNG of
{FIGURE_SIZE[0]} x {FIGURE_SIZE[1]} pixels with a, b, input mixup, CutMix, b carried onto a's layout through the
transport plan between their feature maps at the AlignMixup layer (each feature cell of a receives the
plan-weighted average of b's image patches), a carried onto b's layout, and the plan row of one cell of a
drawn over b.

examples:
  mixkit viz                                    # the demo's model, two Fashion-MNIST test bags
  mixkit viz --run output/demo/<experiment> --image-a a.png --image-b b.png --cell 1 2
  mixkit viz --model resnet50 --checkpoint r50.pth --image-a a.jpg --image-b b.jpg --output fig.png
  mixkit viz --run output/demo/fashion_mnist_alignmixup_ae --decoder   # mixes decoded (make demo-ae)"""


@dataclass
class Alignment:
    """Everything the figure shows, as tensors.

    Attributes:
        a: (C, H, W) pixels of image a in [0, 1].
        b: (C, H, W) pixels of image b.
        plan: (n, n) transport plan between a's and b's feature cells (rows: cells of a).
        grid: Feature map height and width (h, w), n = h * w.
        b_on_a: (C, H, W) b carried onto a's layout through the plan.
        a_on_b: (C, H, W) a carried onto b's layout.
        layer: The module whose output was aligned.
    """

    a: torch.Tensor
    b: torch.Tensor
    plan: torch.Tensor
    grid: tuple[int, int]
    b_on_a: torch.Tensor
    a_on_b: torch.Tensor
    layer: str


def load_image(path: str | os.PathLike, *, img_size: int, in_chans: int) -> torch.Tensor:
    """An image file as (in_chans, img_size, img_size) pixels in [0, 1]: shorter side resized, centre crop.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It is not an image PIL can read, or in_chans is not 1 or 3.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import v2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist: pass an existing image file")
    if in_chans not in (1, 3):
        raise ValueError(f"images are read as greyscale or RGB: in_chans must be 1 or 3, got {in_chans}")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if in_chans == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not a readable image ({e})") from e
    transform = v2.Compose([v2.ToImage(), v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size),
                            v2.ToDtype(torch.float32, scale=True)])
    return transform(img)


def _patches_mean(plan: torch.Tensor, image: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Each row's plan-weighted average of ``image``'s patches, laid out on the rows' grid, at image size."""
    c, height, width = image.shape
    h, w = grid
    ph, pw = math.ceil(height / h), math.ceil(width / w)
    # Resample so that the h x w feature cells cover whole patches of ph x pw pixels.
    big = F.interpolate(image[None], size=(h * ph, w * pw), mode="bilinear", align_corners=False)[0]
    patches = big.reshape(c, h, ph, w, pw).permute(1, 3, 0, 2, 4).reshape(h * w, -1)  # (n, C*ph*pw)
    weights = plan / plan.sum(dim=1, keepdim=True).clamp_min(torch.finfo(plan.dtype).tiny)
    carried = (weights.to(patches) @ patches).reshape(h, w, c, ph, pw).permute(2, 0, 3, 1, 4)
    return F.interpolate(carried.reshape(1, c, h * ph, w * pw), size=(height, width), mode="bilinear",
                         align_corners=False)[0].clamp(0, 1)


def layer_features(model: nn.Module, layer: str, pixels: torch.Tensor, *, mean: tuple[float, ...],
                   std: tuple[float, ...]) -> torch.Tensor:
    """The (B, C, h, w) output of ``layer`` for (B, C, H, W) ``pixels`` in [0, 1], normalised as the model was
    trained; one eval-mode, no-grad forward, every module's training mode restored afterwards.

    Raises:
        TypeError: The layer does not output one feature map.
    """
    from .mix.layers import get_layer

    captured: list[torch.Tensor] = []
    handle = get_layer(model, layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        with torch.no_grad():
            model(((pixels - mean_t) / std_t).to(next(model.parameters()).device))
    finally:
        handle.remove()
        for module, mode in modes.items():
            module.training = mode
    if len(captured) != 1 or not isinstance(captured[0], torch.Tensor) or captured[0].ndim != 4:
        raise TypeError(f"layer {layer!r} must output one (B, C, h, w) feature map for the visualisation")
    return captured[0]


def show_image(ax: Any, img: torch.Tensor, name: str = "", *, fontsize: int = 11) -> None:
    """One (C, H, W) image in [0, 1] on a matplotlib axis, greyscale for one channel, without ticks."""
    pixels = img.permute(1, 2, 0).numpy()
    ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=1)
    ax.set_title(name, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


def align_images(model: nn.Module, a: torch.Tensor, b: torch.Tensor, *, mean: tuple[float, ...],
                 std: tuple[float, ...], layer: str | None = None, solver: str = "default",
                 eps: float | None = None) -> Alignment:
    """Solves the transport plan between the feature maps of a and b and carries each image onto the other.

    Args:
        model: The classifier (timm or any module with the layer); run in eval mode, no gradients.
        a: (C, H, W) pixels in [0, 1].
        b: (C, H, W) pixels in [0, 1], same shape.
        mean: Normalisation mean the model was trained with, per channel.
        std: Normalisation std, per channel.
        layer: Module name of the feature map (None: AlignMixup's default, the last feature stage).
        solver: mixkit.ot solver name ('default': AlignMixup's and ``mixkit viz``'s default).
        eps: Entropic regularisation (None: the solver's default, as AlignMixup uses it).
    """
    from .mix.layers import default_feature_layer, resolve_layer
    from .ot import transport_plan

    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"a and b must be (C, H, W) images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    layer = default_feature_layer(model) if layer is None else resolve_layer(model, layer)
    fmap = layer_features(model, layer, torch.stack([a, b]), mean=mean, std=std).float().cpu()
    grid = (fmap.shape[2], fmap.shape[3])
    points = fmap.flatten(2).transpose(1, 2)  # (2, n, C)
    plan = transport_plan(points[:1], points[1:], solver=solver, eps=eps)[0]
    return Alignment(a=a, b=b, plan=plan, grid=grid, b_on_a=_patches_mean(plan, b, grid),
                     a_on_b=_patches_mean(plan.T, a, grid), layer=layer)


def _cutmix(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    # timm's CutMix box has area (1 - lam) at a random centre; a centred box keeps the figure repeatable.
    _, height, width = a.shape
    cut = math.sqrt(1 - lam)
    ch, cw = int(height * cut), int(width * cut)
    top, left = (height - ch) // 2, (width - cw) // 2
    out = a.clone()
    out[:, top:top + ch, left:left + cw] = b[:, top:top + ch, left:left + cw]
    return out


def plot_alignment(al: Alignment, path: str | os.PathLike, *, lam: float = 0.5,
                   cell: tuple[int, int] | None = None, title: str = "") -> Path:
    """Writes the eight-panel figure (``FIGURE_SIZE`` pixels) atomically and returns its path.

    Args:
        al: The alignment (``align_images``).
        path: Output PNG.
        lam: Weight of a in the input mixup and CutMix panels.
        cell: (row, column) of the feature cell of a whose plan is drawn; None: the centre cell.
        title: Title line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .atomic import save_figure_atomic

    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    h, w = al.grid
    cell = (h // 2, w // 2) if cell is None else tuple(cell)
    if not (0 <= cell[0] < h and 0 <= cell[1] < w):
        raise ValueError(f"cell {cell} is outside the {h} x {w} feature grid: rows 0..{h - 1}, columns 0..{w - 1}")
    row = al.plan[cell[0] * w + cell[1]]
    share = (row / row.sum()).reshape(h, w)

    show = show_image
    _, height, width = al.a.shape
    fig, axes = plt.subplots(2, 4, figsize=(FIGURE_SIZE[0] / _DPI, FIGURE_SIZE[1] / _DPI), dpi=_DPI)
    try:
        show(axes[0, 0], al.a, "a")
        show(axes[0, 1], al.b, "b")
        show(axes[0, 2], lam * al.a + (1 - lam) * al.b, f"input mixup (lam {lam:.2f})")
        show(axes[0, 3], _cutmix(al.a, al.b, lam), f"CutMix (box area {1 - lam:.2f})")
        show(axes[1, 0], al.b_on_a, "b aligned to a's layout")
        show(axes[1, 1], al.a_on_b, "a aligned to b's layout")
        cell_h, cell_w = height / h, width / w
        show(axes[1, 2], al.a, f"a: feature cell {cell} of {h}x{w}")
        axes[1, 2].add_patch(Rectangle((cell[1] * cell_w - 0.5, cell[0] * cell_h - 0.5), cell_w, cell_h,
                                       fill=False, edgecolor="red", linewidth=2.5))
        show(axes[1, 3], al.b, "b: where that cell draws from")
        heat = axes[1, 3].imshow(share.numpy(), cmap="magma", alpha=0.6, vmin=0, vmax=float(share.max()),
                                 extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="nearest")
        fig.colorbar(heat, ax=axes[1, 3], fraction=0.046, pad=0.04, label="share of the cell's plan row")
        fig.suptitle(title or f"AlignMixup alignment at '{al.layer}' ({h}x{w} feature cells)", fontsize=13)
        fig.tight_layout()
        return save_figure_atomic(fig, path, dpi=_DPI)
    finally:
        plt.close(fig)


def find_demo_run(root: str | os.PathLike = DEMO_OUTPUT, *, holding: str = "model.safetensors") -> Path | None:
    """The newest run directory under ``root`` holding weights (``make demo`` writes them there), or None.

    Args:
        root: A run directory, or a folder of them.
        holding: A file the run must hold besides its weights (``decoder.safetensors``: a run with a decoder).
    """
    root = Path(root)
    if (root / "model.safetensors").is_file() and (root / holding).is_file():
        return root
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir()
            if (p / "model.safetensors").is_file() and (p / "args.yaml").is_file() and (p / holding).is_file()]
    return max(runs, key=lambda p: (p / "model.safetensors").stat().st_mtime) if runs else None


def _model_and_settings(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], Path | None]:
    from . import models  # noqa: F401  (registers mixkit's timm models)
    from .rundir import create_model_from_run, create_model_from_weights

    if args.model:
        if args.run is not None:
            raise ValueError("give either --run or --model, not both")
        kwargs = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v is not None}
        model, settings = create_model_from_weights(args.model, checkpoint=args.checkpoint,
                                                    pretrained=args.pretrained, **kwargs)
        return model, settings, None
    run_dir = args.run
    if run_dir is None and args.decoder:
        run_dir = find_demo_run(holding="decoder.safetensors")
        if run_dir is None:
            raise FileNotFoundError(f"no run with a decoder: {DEMO_OUTPUT}/ holds no run with decoder.safetensors. "
                                    "Run `make demo-ae` first, or pass --run RUN_DIR (trained with --mixup alignmixup_ae)")
    if run_dir is None:
        run_dir = find_demo_run()
        if run_dir is None:
            raise FileNotFoundError(f"no trained model: {DEMO_OUTPUT}/ holds no run with model.safetensors. Run "
                                    "`make demo` first, or pass --run RUN_DIR, or --model NAME --checkpoint FILE")
    model, settings = create_model_from_run(run_dir)
    return model, dict(settings), Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent


def _fashion_mnist_pair(class_id: int, indices: tuple[int, int], *, img_size: int, in_chans: int) -> tuple:
    from .datasets import FashionMNIST

    ds = FashionMNIST(train=False)
    if not 0 <= class_id < len(ds.classes):
        raise ValueError(f"--class-id must be in 0..{len(ds.classes) - 1} (Fashion-MNIST classes), got {class_id}")
    idx = (ds.labels == class_id).nonzero().flatten()
    picked = []
    for i in indices:
        if not 0 <= i < len(idx):
            raise ValueError(f"--indices {i} is out of range: class {class_id} has {len(idx)} test images")
        x = ds.images[idx[i]][None, None].float() / 255
        if img_size != x.shape[-1]:
            x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True).clamp(0, 1)
        picked.append(x[0].expand(in_chans, -1, -1).contiguous())
    return picked[0], picked[1], f"two Fashion-MNIST test images of class '{ds.classes[class_id]}'"


def run(args: argparse.Namespace) -> Path:
    """The ``mixkit viz`` command: builds the figure as ``args`` say and returns the PNG's path."""
    from .eval.data import as_floats

    if (args.image_a is None) != (args.image_b is None):
        raise ValueError("pass both --image-a and --image-b, or neither (two Fashion-MNIST test images)")
    for image in (args.image_a, args.image_b):  # before loading any model: a typo fails fast
        if image is not None and not Path(image).is_file():
            raise FileNotFoundError(f"image {image} does not exist: pass an existing image file")
    if args.decoder and args.model:
        raise ValueError("--decoder draws a run's trained decoder: pass --run RUN_DIR (a run trained with "
                         "--mixup alignmixup_ae), not --model")
    model, settings, run_dir = _model_and_settings(args)
    in_chans = int(settings["in_chans"])
    img_size = int(args.img_size or (settings["img_size"][-1] if isinstance(settings["img_size"], list | tuple)
                                     else settings["img_size"]))
    if args.image_a is not None:
        a = load_image(args.image_a, img_size=img_size, in_chans=in_chans)
        b = load_image(args.image_b, img_size=img_size, in_chans=in_chans)
        what = f"{Path(args.image_a).name} and {Path(args.image_b).name}"
    else:
        a, b, what = _fashion_mnist_pair(args.class_id, tuple(args.indices), img_size=img_size, in_chans=in_chans)
    mean = as_floats(args.mean or settings["mean"], in_chans, "mean")
    std = as_floats(args.std or settings["std"], in_chans, "std")
    if args.decoder:
        return _run_decoder(args, model, settings, run_dir, a, b, what, mean=mean, std=std)
    al = align_images(model, a, b, mean=mean, std=std, layer=args.layer, solver=args.solver, eps=args.eps)
    output = args.output or ((run_dir / "alignment.png") if run_dir is not None else Path("alignment.png"))
    title = (f"{settings['model']}: {what}; transport plan at '{al.layer}' "
             f"({al.grid[0]}x{al.grid[1]} cells, solver {args.solver})")
    return plot_alignment(al, output, lam=args.lam, cell=tuple(args.cell) if args.cell else None, title=title)


def _run_decoder(args: argparse.Namespace, model: nn.Module, settings: dict[str, Any], run_dir: Path,
                 a: torch.Tensor, b: torch.Tensor, what: str, *, mean: tuple[float, ...], std: tuple[float, ...]) -> Path:
    from .viz_decoded import decode_mixes, load_run_decoder, plot_decoded

    if args.layer is not None or args.cell is not None:
        raise ValueError("--layer and --cell belong to the alignment figure; --decoder decodes the run's own layer")
    with load_run_decoder(model, run_dir, settings) as mix:
        mixes = decode_mixes(mix, a, b, mean=mean, std=std, solver=args.solver, eps=args.eps)
    title = f"{settings['model']}: {what}\nmixes decoded from '{mixes.layer}' (lam: weight of a; solver {args.solver})"
    return plot_decoded(mixes, args.output or run_dir / "decoded.png", title=title)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``viz`` sub-command to the ``mixkit`` command line."""
    p = sub.add_parser(
        "viz", help="draw AlignMixup's alignment of two images (a PNG in the spirit of the paper's Figure 1)",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path,
                   help=f"mixkit-train run directory or .safetensors file in one (default: the newest run "
                        f"under {DEMO_OUTPUT}/, which `make demo` writes)")
    p.add_argument("--model", help="timm model name instead of a run (with --checkpoint or --pretrained)")
    p.add_argument("--checkpoint", type=Path, help="weights for --model (.safetensors, .pth)")
    p.add_argument("--pretrained", action="store_true", help="--model with timm's pretrained weights")
    p.add_argument("--num-classes", type=int, help="classifier outputs of --model (default: the model's)")
    p.add_argument("--in-chans", type=int, help="input channels of --model (default: the model's, usually 3)")
    p.add_argument("--mean", type=float, nargs="+",
                   help="normalisation mean per channel (default: the run's, else the model's pretrained_cfg)")
    p.add_argument("--std", type=float, nargs="+", help="normalisation std per channel (default: likewise)")
    p.add_argument("--image-a", type=Path, help="first image file (default: a Fashion-MNIST test image)")
    p.add_argument("--image-b", type=Path, help="second image file (both or neither)")
    p.add_argument("--class-id", type=int, default=8,
                   help="without image files: the Fashion-MNIST class of both images (default 8, Bag)")
    p.add_argument("--indices", type=int, nargs=2, default=(0, 1), metavar=("I", "J"),
                   help="without image files: which test images of that class (default 0 1)")
    p.add_argument("--img-size", type=int, help="input side length (default: the run's / the model's)")
    p.add_argument("--layer", help="module whose feature map is aligned (default: AlignMixup's, the last "
                                   "feature stage)")
    p.add_argument("--cell", type=int, nargs=2, metavar=("ROW", "COL"),
                   help="feature cell of a whose plan row is drawn (default: the centre cell)")
    p.add_argument("--lam", type=float, default=0.5, help="weight of a in the mixup and CutMix panels (default 0.5; "
                                                              "--decoder draws its own row of lam values)")
    p.add_argument("--solver", default="default",
                   help="mixkit.ot solver (default: 'default', AlignMixup's: the compiled numba loop on the CPU)")
    p.add_argument("--eps", type=float, help="entropic regularisation (default: the solver's)")
    p.add_argument("--decoder", action="store_true",
                   help="draw the run's mixes decoded into pictures instead (the run's decoder.safetensors: trained "
                        "with --mixup alignmixup_ae): a, b and their decoded features, then input mixup, manifold "
                        "mixup and AlignMixup both ways at lam 0, 0.25, 0.5, 0.75, 1")
    p.add_argument("--output", type=Path,
                   help=f"PNG to write, {FIGURE_SIZE[0]} x {FIGURE_SIZE[1]} px (default: alignment.png in the "
                        "run directory, else in the current directory; decoded.png with --decoder)")
    p.set_defaults(func=_run_cli)
    return p


def _run_cli(args: argparse.Namespace) -> int:
    path = run(args)
    print(f"wrote {path}")
    return 0
