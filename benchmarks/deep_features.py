"""Real deep feature maps for measuring optimal-transport alignment offline (a benchmark and test fixture).

Not part of the mixkit package: only the OT tests (tests/ot_features.py) and the benchmarks use it.

Random tensors do not show how deep features behave (their pairwise distances concentrate, which
is what makes the choice of eps hard), and no pretrained weights can be downloaded in tests. So a
small ResNet-style CNN is trained for a few epochs on Fashion-MNIST and its last 7x7 feature map
(after ReLU, as ResNet's layer4) is taken as a set of 49 points per image. The result is cached.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mixkit.datasets import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST

DEFAULT_CACHE_DIR = Path(os.environ.get("MIXKIT_CACHE", Path.home() / ".cache" / "mixkit"))


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FeatureNet(nn.Module):
    """28x28 grey images -> (B, width*4, 7, 7) feature map -> logits."""

    def __init__(self, *, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(1, width, 1), _block(width, 2 * width, 2), _block(2 * width, 4 * width, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _to_input(images: torch.Tensor) -> torch.Tensor:
    # Fashion-MNIST pixel mean/std.
    return ((images.float() / 255.0 - 0.286) / 0.353).unsqueeze(1)


def train_feature_net(
    *,
    epochs: int = 2,
    train_images: int = 20000,
    width: int = 32,
    batch_size: int = 128,
    seed: int = 0,
    root: str | os.PathLike = DEFAULT_FASHION_MNIST_ROOT,
    progress: bool = True,
) -> tuple[FeatureNet, float]:
    """Train the small CNN on a Fashion-MNIST subset.

    Returns:
        The trained network (eval mode) and its accuracy on the 10k test images.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train = FashionMNIST(root=root, train=True)
    subset = torch.randperm(len(train), generator=gen)[:train_images]
    images, labels = train.images[subset], train.labels[subset]
    net = FeatureNet(width=width)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * (len(images) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    bar = tqdm(total=steps, desc="training feature net on Fashion-MNIST", disable=not progress)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for i in range(len(images) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = nn.functional.cross_entropy(net(_to_input(images[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    net.eval()
    test = FashionMNIST(root=root, train=False)
    with torch.no_grad():
        correct = sum(
            (net(_to_input(test.images[i : i + 1000])).argmax(1) == test.labels[i : i + 1000]).sum().item()
            for i in range(0, len(test), 1000)
        )
    return net, correct / len(test)


def fashion_mnist_features(
    num_images: int = 512,
    *,
    epochs: int = 2,
    train_images: int = 20000,
    width: int = 32,
    seed: int = 0,
    root: str | os.PathLike = DEFAULT_FASHION_MNIST_ROOT,
    cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> torch.Tensor:
    """Last 7x7 feature maps of a briefly trained CNN on Fashion-MNIST test images, as point sets.

    Args:
        num_images: How many test images (the first ones of the test split) to embed.
        epochs: Training epochs of the feature network.
        train_images: Size of the training subset.
        width: Channel width of the first stage; the feature map has ``4 * width`` channels.
        seed: Seed of the training run.
        root: Fashion-MNIST folder.
        cache_dir: Where trained features are cached; None disables caching.
        progress: Show a progress bar while training.

    Returns:
        Float32 tensor (num_images, 49, 4 * width), non-negative (post-ReLU) as ResNet features.
    """
    if not 1 <= num_images <= 10000:
        raise ValueError(f"num_images must be in [1, 10000] (the test split), got {num_images}")
    key = hashlib.sha1(f"{epochs}-{train_images}-{width}-{seed}".encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"fmnist-features-{key}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        feats = torch.load(path, weights_only=True)
        if len(feats) >= num_images:
            return feats[:num_images].clone()
    net, _ = train_feature_net(
        epochs=epochs, train_images=train_images, width=width, seed=seed, root=root, progress=progress
    )
    test = FashionMNIST(root=root, train=False)
    n_cache = max(num_images, 1024)
    with torch.no_grad():
        fmap = torch.cat([net.features(_to_input(test.images[i : i + 256])) for i in range(0, n_cache, 256)])
    feats = fmap.flatten(2).transpose(1, 2).contiguous()[:n_cache]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic (a temp name unique to this process, then os.replace), so parallel test workers and
        # benchmarks never read half a file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(feats, tmp)
        os.replace(tmp, path)
    return feats[:num_images].clone()
