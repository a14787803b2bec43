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
