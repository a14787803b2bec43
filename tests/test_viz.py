"""mixkit viz: the PNG it writes, the alignment it draws, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from eval_fixtures import make_run
from PIL import Image

from mixkit.cli import main
from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT
from mixkit.viz import FIGURE_SIZE, _patches_mean, find_demo_run, load_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _images(tmp_path: Path) -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(0)
    paths = []
    for name, size in (("a.png", (40, 30)), ("b.jpg", (28, 28))):
        pixels = (torch.rand(size[1], size[0], generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels, mode="L").convert("RGB").save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths[0], paths[1]


def test_writes_a_png_of_the_documented_size(tmp_path: Path, capsys):
    run = make_run(tmp_path / "run")
    a, b = _images(tmp_path)
    out = tmp_path / "fig" / "alignment.png"
    assert main(["viz", "--run", str(run), "--image-a", str(a), "--image-b", str(b), "--output", str(out),
                 "--cell", "0", "3"]) == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.size == FIGURE_SIZE
    assert str(out) in capsys.readouterr().out
    assert not list(out.parent.glob(".*tmp"))  # the atomic write left no temporary file


@pytest.mark.skipif(not (DEFAULT_FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_default_images_are_fashion_mnist_and_output_goes_to_the_run(tmp_path: Path):
    run = make_run(tmp_path / "run")
    assert main(["viz", "--run", str(run), "--class-id", "9"]) == 0
    with Image.open(run / "alignment.png") as img:
        assert img.size == FIGURE_SIZE


def test_timm_model_with_its_own_classifier_size(tmp_path: Path):
    import timm

    torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), tmp_path / "r18.pth")
    a, b = _images(tmp_path)
    argv = ["viz", "--model", "resnet18", "--checkpoint", str(tmp_path / "r18.pth"), "--image-a", str(a),
            "--image-b", str(b), "--img-size", "64", "--output", str(tmp_path / "v.png")]
    assert main(argv) == 2  # timm's 1000-class default does not fit the checkpoint
    assert main([*argv, "--num-classes", "10"]) == 0
    with Image.open(tmp_path / "v.png") as img:
        assert img.size == FIGURE_SIZE


def test_missing_image_is_a_clear_error(tmp_path: Path, capsys):
    run = make_run(tmp_path / "run")
    a, _ = _images(tmp_path)
    missing = tmp_path / "missing.png"
    assert main(["viz", "--run", str(run), "--image-a", str(a), "--image-b", str(missing),
                 "--output", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "missing.png does not exist" in err and "image" in err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(missing, img_size=28, in_chans=1)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(tmp_path / "bad.png", img_size=28, in_chans=1)
    assert main(["viz", "--run", str(run), "--image-a", str(a)]) == 2
    assert "both --image-a and --image-b" in capsys.readouterr().err


def test_no_demo_run_names_the_fix(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert find_demo_run() is None
    assert main(["viz"]) == 2
    assert "make demo" in capsys.readouterr().err
    run = make_run(tmp_path / "output" / "demo" / "20260101-000000")
    assert find_demo_run() == Path("output/demo/20260101-000000")
    assert run.is_dir()


def test_carried_patches_follow_the_plan():
    # A permutation plan (cell i of a takes cell perm[i] of b) must move b's patches exactly, when the
    # feature grid divides the image (28 = 4 x 7). A uniform plan gives every cell b's mean patch.
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 28, 28, generator=g)
    perm = torch.randperm(16, generator=g)
    plan = torch.zeros(16, 16)
    plan[torch.arange(16), perm] = 1 / 16
    out = _patches_mean(plan, image, (4, 4))
    for i in range(16):
        r, c = divmod(i, 4)
        pr, pc = divmod(int(perm[i]), 4)
        torch.testing.assert_close(out[:, 7 * r:7 * r + 7, 7 * c:7 * c + 7],
                                   image[:, 7 * pr:7 * pr + 7, 7 * pc:7 * pc + 7])
    uniform = _patches_mean(torch.full((16, 16), 1 / 256), image, (4, 4))
    mean_patch = image.reshape(1, 4, 7, 4, 7).mean(dim=(1, 3))
    torch.testing.assert_close(uniform[:, :7, :7], mean_patch)
    torch.testing.assert_close(uniform[:, 21:, 14:21], mean_patch)


def test_the_function_and_the_cli_default_to_alignmixups_solver():
    """align_images and `mixkit viz` draw the plan AlignMixup computes: the 'default' solver (the function
    defaulted to 'torch' while the CLI used 'default')."""
    import argparse
    import inspect

    from mixkit.mix import AlignMixup
    from mixkit.viz import add_parser, align_images

    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    cli_default = sub.choices["viz"].get_default("solver")
    function_default = inspect.signature(align_images).parameters["solver"].default
    method_default = inspect.signature(AlignMixup.__init__).parameters["solver"].default
    assert cli_default == function_default == method_default == "default"


def _run_with_decoder(tmp_path: Path) -> Path:
    from mixkit.mix import create_mixup
    from mixkit.rundir import create_model_from_run, save_model_safetensors

    run = make_run(tmp_path / "run", mixup="alignmixup_ae", mixup_kwargs={"mixup_alpha": 2.0})
    model, settings = create_model_from_run(run)
    torch.manual_seed(1)
    with create_mixup("alignmixup_ae", model=model, num_classes=settings["num_classes"]) as mix:
        save_model_safetensors(mix.decoder, run / "decoder.safetensors")
    return run


def test_decoder_figure_is_written_into_the_run(tmp_path: Path, capsys):
    from mixkit.viz_decoded import DECODED_FIGURE_SIZE

    run = _run_with_decoder(tmp_path)
    a, b = _images(tmp_path)
    assert main(["viz", "--run", str(run), "--decoder", "--image-a", str(a), "--image-b", str(b)]) == 0
    with Image.open(run / "decoded.png") as img:
        assert img.size == DECODED_FIGURE_SIZE
    assert str(run / "decoded.png") in capsys.readouterr().out


def test_decoded_mixes_are_the_decoder_applied_to_each_mix(tmp_path: Path):
    """Hand-checkable cells: lam 1 is a everywhere (and lam 0 is b) where the mix says so; the middle of the
    manifold row is the decoded mean of the two feature maps; AlignMixup's to_a at lam 0 is b's features
    carried onto a's cells by the row-normalised plan (mixkit.ot.transport_plan)."""
    from mixkit.ot import transport_plan
    from mixkit.rundir import create_model_from_run
    from mixkit.viz_decoded import LAMS, decode_mixes, load_run_decoder

    run = _run_with_decoder(tmp_path)
    model, settings = create_model_from_run(run)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 28, 28, generator=g), torch.rand(1, 28, 28, generator=g)
    mean, std = tuple(settings["mean"]), tuple(settings["std"])
    with load_run_decoder(model, run, settings) as mix:
        mixes = decode_mixes(mix, a, b, mean=mean, std=std)
        with torch.no_grad():
            fa = model.forward_features((a[None] - mean[0]) / std[0])
            fb = model.forward_features((b[None] - mean[0]) / std[0])

            def decoded(features):
                return (mix.decode(features, (28, 28)) * std[0] + mean[0]).clamp(0, 1)[0]

            one, zero, half = LAMS.index(1.0), LAMS.index(0.0), LAMS.index(0.5)
            for key in ("input", "manifold", "to_a"):  # to_b at lam 1 is a carried onto b's cells
                torch.testing.assert_close(mixes.rows[key][one], mixes.decoded_a, atol=1e-5, rtol=0)
            for key in ("input", "manifold", "to_b"):  # to_a at lam 0: b carried onto a's cells, below
                torch.testing.assert_close(mixes.rows[key][zero], mixes.decoded_b, atol=1e-5, rtol=0)
            torch.testing.assert_close(mixes.decoded_a, decoded(fa), atol=1e-5, rtol=0)
            torch.testing.assert_close(mixes.rows["manifold"][half], decoded((fa + fb) / 2), atol=1e-5, rtol=0)
            pa, pb = fa.flatten(2).transpose(1, 2), fb.flatten(2).transpose(1, 2)
            plan = transport_plan(pa, pb)[0]
            carried = (plan / plan.sum(1, keepdim=True)) @ pb[0]
            torch.testing.assert_close(mixes.rows["to_a"][zero], decoded(carried.T.reshape(fa.shape)), atol=1e-4, rtol=0)
    assert model.training is False and not any(m._forward_hooks for m in model.modules())


def test_decoder_figure_errors_name_the_fix(tmp_path: Path, capsys, monkeypatch):
    from mixkit.cli import build_parser
    from mixkit.viz import run as run_viz

    run = make_run(tmp_path / "plain", mixup="alignmixup")
    assert main(["viz", "--run", str(run), "--decoder"]) == 2
    err = capsys.readouterr().err
    assert "no decoder.safetensors" in err and "--mixup alignmixup_ae" in err
    with pytest.raises(ValueError, match="pass --run RUN_DIR"):
        run_viz(build_parser().parse_args(["viz", "--model", "resnet18", "--decoder"]))
    with pytest.raises(ValueError, match="--layer and --cell belong to the alignment figure"):
        run_viz(build_parser().parse_args(["viz", "--run", str(_run_with_decoder(tmp_path)), "--decoder",
                                           "--layer", "layer3"]))
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "output" / "demo" / "plain")  # a demo run, but without a decoder
    with pytest.raises(FileNotFoundError, match="make demo-ae"):
        run_viz(build_parser().parse_args(["viz", "--decoder"]))
