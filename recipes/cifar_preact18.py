#!/usr/bin/env python3
"""PreActResNet-18 (CIFAR stem) on CIFAR-10/100 with AlignMixup: the authors' setting.

AlignMixup (Venkataramanan et al., CVPR 2022) on CIFAR: mixkit's ``preact_resnet18_cifar`` (3x3 stem, no
max-pool), AlignMixup with alpha 2, SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, 2,000 epochs
with the lr x0.1 at epochs 500, 1,000 and 1,500, no label smoothing, 32 px with random crops and flips.
``--schedule short``: 200 epochs, x0.1 at 100 and 150 (a common shorter CIFAR schedule, for quick studies).

Data: ``--data-dir`` is an ImageFolder with train/ and val/ (or test/ via ``--val-split test``). Where the
internet is reachable, ``--download-cifar 10|100`` writes such a folder from torchvision's CIFAR download
first (never in tests; nothing else downloads).

    python recipes/cifar_preact18.py --data-dir data/cifar10 --val-split test
    accelerate launch recipes/cifar_preact18.py --data-dir data/cifar100 --val-split test --schedule short
    python recipes/cifar_preact18.py ... --mixup alignmixup_ae   # AlignMixup/AE: the paper's other variant

``--mixup alignmixup_ae`` trains the paper's autoencoder variant with the same AlignMixup settings (alpha 2,
the last feature stage) and a decoder beside the classifier, saved as ``decoder.safetensors``
(docs/mixing.md, AlignMixup/AE); any other registered ``--mixup`` method works the same way.
"""
import argparse
import sys
from pathlib import Path

from mixkit.train import run_recipe

DEFAULTS = dict(
    model="preact_resnet18_cifar",
    mixup="alignmixup",
    mixup_kwargs={"mixup_alpha": 2.0},
    opt="momentum",  # plain SGD with momentum, as the authors' code
    momentum=0.9,
    lr=0.1,
    weight_decay=1e-4,
    batch_size=128,
    epochs=2000,
    sched="multistep",
    decay_milestones=[500, 1000, 1500],
    decay_rate=0.1,
    warmup_epochs=0,
    smoothing=0.0,
    img_size=32,
    crop_pct=1.0,
    scale=[0.6, 1.0],
    ratio=[0.9, 1.1],
    workers=4,
    output="output/cifar_preact18",
)

SCHEDULES = {"short": dict(epochs=200, decay_milestones=[100, 150])}


def download_cifar(which: int, root: Path) -> None:
    """Writes torchvision's CIFAR-10/100 as an ImageFolder (train/, test/) under ``root`` (needs internet)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if which == 10 else CIFAR100
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(root / "download"), train=train, download=True)
        for i, (img, label) in enumerate(ds):
            d = root / split / ds.classes[label]
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"{i:05d}.png")


if __name__ == "__main__":
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--download-cifar", type=int, choices=(10, 100), default=None)
    known, rest = pre.parse_known_args()
    if known.download_cifar:
        data = Path(next((rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "--data-dir"), "data/cifar"))
        if not (data / "train").is_dir():
            download_cifar(known.download_cifar, data)
    sys.exit(run_recipe(DEFAULTS, description=__doc__ + "\n--download-cifar 10|100: see above.", argv=rest,
                        schedules=SCHEDULES, schedule_help="'short': 200 epochs, x0.1 at 100 and 150"))
