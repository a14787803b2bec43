"""mixkit-eval --ood / --ood-dir end to end on fabricated runs: eval.json's shape, the histograms, the metrics
against scores recomputed by hand and scikit-learn, the built-in sets, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from eval_fixtures import make_run
from PIL import Image

pytest.importorskip("pytorch_ood")
sk = pytest.importorskip("sklearn.metrics")

from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT  # noqa: E402
from mixkit.eval.cli import main  # noqa: E402
from mixkit.eval.ood import OOD_METRICS  # noqa: E402
from mixkit.eval.ood_data import builtin_ood_set, folder_name, folder_ood_set  # noqa: E402
from mixkit.rundir import create_model_from_run  # noqa: E402

needs_fmnist = pytest.mark.skipif(not (DEFAULT_FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Debian's dataset-fashion-mnist is not installed")
QUICK = ["--no-attacks", "--no-progress", "--device", "cpu", "--workers", "0", "--crop-pct", "1.0"]
SIZE = 16


def _pngs(folder: Path, n: int, *, seed: int, mode: str = "RGB", size: int = SIZE) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        chans = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = rng.integers(0, 256, (size, size, chans)).astype(np.uint8)
        path = folder / f"{i:02d}.png"
        Image.fromarray(pixels[..., 0] if chans == 1 else pixels, mode=mode).save(path)
        paths.append(path)
    return paths


def _image_folder_run(tmp_path: Path, *, in_chans: int = 3, train: bool = False) -> tuple[Path, list[Path]]:
    """An ImageFolder run at 16 px whose validation images are 16 x 16 already: with --crop-pct 1 the evaluation
    transform leaves them as they are, so the test can read them by hand."""
    data = tmp_path / "data"
    val = _pngs(data / "validation" / "a", 5, seed=1) + _pngs(data / "validation" / "b", 5, seed=2)
    if train:
        # More images than the 32 features: the shared covariance is well conditioned.
        _pngs(data / "train" / "a", 40, seed=3)
        _pngs(data / "train" / "b", 40, seed=4)
    run = make_run(tmp_path / "run", dataset=None, data_dir=str(data), in_chans=in_chans, img_size=SIZE,
                   num_classes=2, classes=["a", "b"])
    return run, val


def _pixels(paths: list[Path], in_chans: int) -> torch.Tensor:
    # By hand: PIL's own conversions ('L' is ITU-R 601 luma), no resize (the files are 16 x 16).
    mode = "L" if in_chans == 1 else "RGB"
    arrays = [np.asarray(Image.open(p).convert(mode), dtype=np.float32) / 255 for p in paths]
    x = torch.from_numpy(np.stack(arrays))
    return x[:, None] if in_chans == 1 else x.permute(0, 3, 1, 2)


def _logits(run: Path, x: torch.Tensor) -> torch.Tensor:
    model, args = create_model_from_run(run)
    mean, std = torch.tensor(args["mean"]).view(1, -1, 1, 1), torch.tensor(args["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std).double()


def _sklearn_metrics(s_id: torch.Tensor, s_ood: torch.Tensor) -> dict[str, float]:
    y, s = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))], np.r_[s_id.numpy(), s_ood.numpy()]
    fpr, tpr, _ = sk.roc_curve(y, s)
    # AUPR by the trapezoidal rule over scikit-learn's precision-recall curve (pytorch-ood's definition).
    pr_in, rec_in, _ = sk.precision_recall_curve(y, s)
    pr_out, rec_out, _ = sk.precision_recall_curve(1 - y, -s)
    return {"auroc": sk.roc_auc_score(y, s), "fpr95": fpr[np.searchsorted(tpr, 0.95)],
            "detection_error": (0.5 * (1 - tpr) + 0.5 * fpr).min(),
            "aupr_in": sk.auc(rec_in, pr_in), "aupr_out": sk.auc(rec_out, pr_out)}


def _check_against_sklearn(entry: dict, id_logits: torch.Tensor, ood_logits: torch.Tensor) -> None:
    scores = {"msp": lambda z: z.softmax(1).max(1).values, "energy": lambda z: torch.logsumexp(z, 1)}
    for name, score in scores.items():
        want = _sklearn_metrics(score(id_logits), score(ood_logits))
        got = entry[name]
        assert set(got) == set(OOD_METRICS)
        for key in OOD_METRICS:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (name, key)


def test_ood_dirs_and_digits_match_sklearn(tmp_path: Path, capsys):
    run, val = _image_folder_run(tmp_path)
    imagefolder = tmp_path / "ood_classes"
    ood_a = _pngs(imagefolder / "x", 3, seed=5) + _pngs(imagefolder / "y", 3, seed=6)
    flat = tmp_path / "flat"
    ood_b = _pngs(flat, 4, seed=7)
    (flat / "notes.txt").write_text("not an image")  # ignored
    assert main([str(run), "--ood", "digits", "--ood-samples", "30", "--ood-dir", str(imagefolder),
                 "--ood-dir", str(flat), *QUICK]) == 0
    report = json.loads((run / "eval.json").read_text())
    ood = report["ood"]
    assert list(ood) == ["digits", "ood_classes", "flat"]
    assert [ood[k]["num_samples"] for k in ood] == [30, 6, 4]
    assert all(ood[k]["num_id_samples"] == 10 for k in ood)
    assert report["ood_settings"]["scores"] == ["msp", "energy"] and report["ood_settings"]["id_num_samples"] == 10
    id_logits = _logits(run, _pixels(val, 3))
    _check_against_sklearn(ood["ood_classes"], id_logits, _logits(run, _pixels(ood_a, 3)))
    _check_against_sklearn(ood["flat"], id_logits, _logits(run, _pixels(ood_b, 3)))
    # digits by hand: scikit-learn's 8 x 8 images over 16, upscaled to 16 px, grey repeated to RGB.
    from sklearn.datasets import load_digits

    digits = torch.from_numpy(load_digits().images[:30]).float()[:, None] / 16
    digits = F.interpolate(digits, size=(SIZE, SIZE), mode="bilinear", antialias=True).clamp(0, 1).repeat(1, 3, 1, 1)
    _check_against_sklearn(ood["digits"], id_logits, _logits(run, digits))
    for name in ood:
        path = Path(ood[name]["histogram"])
        assert path == run / f"ood_{name}.png"
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (900, 400)
    out = capsys.readouterr().out
    assert "OOD set (images)" in out and "digits (30)" in out
    assert f"{100 * ood['flat']['msp']['auroc']:6.2f} / {100 * ood['flat']['msp']['fpr95']:6.2f}" in out


def test_noise_set_and_grey_run(tmp_path: Path):
    """A greyscale run: noise is drawn with one channel, RGB / RGBA / grey files become luma; ODIN's settings are
    recorded and its scores pytorch-ood's."""
    run, _ = _image_folder_run(tmp_path, in_chans=1)
    mixed = tmp_path / "mixed"
    files = _pngs(mixed, 2, seed=8) + _pngs(mixed / "rgba", 2, seed=9, mode="RGBA") + _pngs(mixed / "l", 2, seed=10,
                                                                                           mode="L")
    out = tmp_path / "e.json"
    assert main([str(run), "--ood", "noise", "--ood-samples", "20", "--ood-dir", str(mixed), "--ood-scores", "msp",
                 "odin", "--odin-eps", "0.002", "--output", str(out), *QUICK]) == 0
    report = json.loads(out.read_text())
    assert set(report["ood"]["noise"]) >= {"msp", "odin"} and "energy" not in report["ood"]["noise"]
    assert report["ood_settings"]["odin_eps"] == 0.002 and report["ood_settings"]["odin_temperature"] == 1000
    assert Path(report["ood"]["mixed"]["histogram"]) == tmp_path / "ood_mixed_e.png"
    # The folder's pixels are PIL's 'L' conversion (RGBA: of its RGB; within PIL's rounding).
    ds = folder_ood_set(mixed, name="mixed", img_size=SIZE, in_chans=1, crop_pct=1.0, workers=0)
    x = torch.cat(list(ds.batches))
    order = sorted(files)
    assert x.shape == (6, 1, SIZE, SIZE)
    assert torch.allclose(x, _pixels(order, 1), atol=1.5 / 255)
    # Noise: first half Gaussian N(0.5, 1) clipped (about 31% of the pixels at each bound), then uniform.
    noise = torch.cat(list(builtin_ood_set("noise", img_size=SIZE, in_chans=1, num_samples=20).batches))
    assert noise.shape == (20, 1, SIZE, SIZE) and 0 <= noise.min() and noise.max() <= 1
    gauss, unif = noise[:10], noise[10:]
    assert float((gauss == 0).float().mean()) == pytest.approx(0.3085, abs=0.04)
    assert float((gauss == 1).float().mean()) == pytest.approx(0.3085, abs=0.04)
    assert float((unif == 0).float().mean()) == 0 and float(unif.mean()) == pytest.approx(0.5, abs=0.03)
    # ODIN on the noise set, by pytorch-ood directly (it returns an outlier score: minus ours).
    from pytorch_ood.detector import ODIN

    from mixkit.eval import NormalizedModel

    model, args = create_model_from_run(run)
    pix = NormalizedModel(model, args["mean"], args["std"]).eval()
    odin = -ODIN(pix, eps=0.002, temperature=1000.0).predict(noise)
    id_x = _pixels(sorted((tmp_path / "data" / "validation").rglob("*.png")), 1)
    id_odin = -ODIN(pix, eps=0.002, temperature=1000.0).predict(id_x)
    want = _sklearn_metrics(id_odin.double(), odin.double())
    assert report["ood"]["noise"]["odin"]["auroc"] == pytest.approx(want["auroc"], abs=1e-6)


def test_mahalanobis_fits_on_the_training_split(tmp_path: Path):
    run, val = _image_folder_run(tmp_path, train=True)
    flat = tmp_path / "flat"
    ood_files = _pngs(flat, 6, seed=11)
    assert main([str(run), "--ood-dir", str(flat), "--ood-scores", "mahalanobis", *QUICK]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["ood_settings"]["mahalanobis_fit"]["num_samples"] == 80
    # By hand: penultimate features, class means and one shared covariance from the 80 training images; the score
    # is minus the smallest squared Mahalanobis distance (any positive scale of the covariance ranks the same).
    model, args = create_model_from_run(run)
    mean, std = torch.tensor(args["mean"]).view(1, -1, 1, 1), torch.tensor(args["std"]).view(1, -1, 1, 1)

    def features(paths):
        with torch.no_grad():
            x = (_pixels(paths, 3) - mean) / std
            return model.forward_head(model.forward_features(x), pre_logits=True).double().numpy()

    train = sorted((tmp_path / "data" / "train").rglob("*.png"))
    z, y = features(train), np.array([0 if p.parent.name == "a" else 1 for p in train])
    mus = np.stack([z[y == c].mean(0) for c in (0, 1)])
    centred = z - mus[y]
    precision = np.linalg.inv(centred.T @ centred / len(z))

    def score(paths):
        d = features(paths)[:, None, :] - mus[None]
        return torch.from_numpy(-np.einsum("ncd,de,nce->nc", d, precision, d).min(1))

    want = _sklearn_metrics(score(val), score(ood_files))
    assert report["ood"]["flat"]["mahalanobis"]["auroc"] == pytest.approx(want["auroc"], abs=1e-6)


@needs_fmnist
def test_fashion_mnist_run_with_builtin_sets(tmp_path: Path):
    run = make_run(tmp_path / "run")
    assert main([str(run), "--limit", "40", "--ood", "digits", "gaussian", "uniform", "photos", "textures",
                 "--ood-samples", "12", "--no-attacks", "--no-progress", "--device", "cpu"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert list(report["ood"]) == ["digits", "gaussian", "uniform", "photos", "textures"]
    for entry in report["ood"].values():
        assert entry["num_samples"] == 12 and entry["num_id_samples"] == 40
        assert 0 <= entry["msp"]["auroc"] <= 1 and 0 <= entry["energy"]["fpr95"] <= 1
        assert Path(entry["histogram"]).is_file()


def test_builtin_sets_are_deterministic_and_sized():
    a = torch.cat(list(builtin_ood_set("photos", img_size=20, in_chans=3, num_samples=5, batch_size=2).batches))
    b = torch.cat(list(builtin_ood_set("photos", img_size=20, in_chans=3, num_samples=5).batches))
    assert a.shape == (5, 3, 20, 20) and torch.equal(a, b) and a.std() > 0.05
    grey = builtin_ood_set("textures", img_size=20, in_chans=1, num_samples=3)
    assert next(iter(grey.batches)).shape == (3, 1, 20, 20)
    assert builtin_ood_set("digits", img_size=8, in_chans=1, num_samples=5000).num_samples == 1797
    assert folder_name("/x/my set", taken=["my_set"]) == "my_set_2"


def test_bad_input(tmp_path: Path, capsys):
    run, _ = _image_folder_run(tmp_path)
    base = [str(run), *QUICK]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--ood-dir", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    (empty / "readme.txt").write_text("x")
    assert main([*base, "--ood-dir", str(empty)]) == 2
    assert "holds no image file (looked for .jpg" in capsys.readouterr().err
    assert main([*base, "--ood-dir", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (empty / "broken.png").write_bytes(b"not a png")
    assert main([*base, "--ood-dir", str(empty)]) == 2
    assert "1 of 1 image files cannot be read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*base, "--ood", "mnist"])
    assert e.value.code == 2 and "invalid choice: 'mnist'" in capsys.readouterr().err
    assert main([*base, "--ood-scores", "energy"]) == 2
    assert "--ood-scores need an OOD set: add --ood SET" in capsys.readouterr().err
    assert main([*base, "--ood", "uniform", "--odin-eps", "0.01"]) == 2
    assert "--odin-eps is for the ODIN score: add odin to --ood-scores" in capsys.readouterr().err
    assert main([*base, "--ood", "uniform", "--ood-samples", "0"]) == 2
    assert "--ood-samples must be >= 1" in capsys.readouterr().err
    assert main([*base, "--ood", "uniform", "--ood-scores", "mahalanobis"]) == 2
    assert "needs the training split" in capsys.readouterr().err
    with pytest.raises(ValueError, match="in_chans=2 cannot take them"):
        builtin_ood_set("noise", img_size=8, in_chans=2)


def test_training_split_of_a_fashion_mnist_run(tmp_path: Path):
    """Mahalanobis' training split of a Fashion-MNIST run is the run's IDX folder (here a tiny one), resized and
    repeated to the model's channels per batch."""
    from eval_fixtures import make_idx_fashion_mnist

    from mixkit.datasets import FashionMNIST
    from mixkit.eval.cli import build_parser
    from mixkit.eval.oodreport import training_split

    idx = make_idx_fashion_mnist(tmp_path / "fmnist", train=24, test=8)
    run = make_run(tmp_path / "run", data_dir=str(idx))
    args = build_parser().parse_args([str(run), "--batch-size", "10"])
    settings = yaml.safe_load((run / "args.yaml").read_text())
    data = training_split(args, settings, img_size=32, in_chans=3, dataset="fashion_mnist")
    x, y = map(torch.cat, zip(*data.batches, strict=True))
    ds = FashionMNIST(root=idx, train=True)
    assert data.num_samples == 24 and data.num_batches == 3 and torch.equal(y, ds.labels)
    want = F.interpolate(ds.images[:, None].float() / 255, size=(32, 32), mode="bilinear", antialias=True)
    assert x.shape == (24, 3, 32, 32) and torch.allclose(x, want.clamp(0, 1).expand(-1, 3, -1, -1))
