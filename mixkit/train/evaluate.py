"""Evaluation during training: loss, top-1 and top-5, each sample counted once across processes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, accelerator, *, hflip_tta: bool = False) -> dict[str, float]:
    """Loss, top-1 and top-5 over the evaluation set; each sample counted once across ranks.

    ``hflip_tta``: the logits of the image and of its mirror image are added (FFCV's ``lr_tta``).

    Every rank sums over its own shard (mixkit's evaluation shards hold every sample exactly once, no
    padding); ``gather_for_metrics`` collects one row of sums per rank.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
    for x, y in loader:
        with accelerator.autocast():
            out = model(x)
            if hflip_tta:
                out = out + model(x.flip(3))
        out = out.float()
        k = min(5, out.shape[1])
        hit = out.topk(k, dim=1).indices.eq(y[:, None])
        sums += torch.stack([F.cross_entropy(out, y, reduction="sum").double(), hit[:, :1].sum().double(),
                             hit.any(1).sum().double(), torch.tensor(float(len(y)), device=sums.device,
                                                                     dtype=torch.float64)])
    total = accelerator.gather_for_metrics(sums[None]).reshape(-1, 4).sum(0).tolist()
    model.train(was_training)
    n = max(total[3], 1.0)
    return {"loss": total[0] / n, "top1": 100.0 * total[1] / n, "top5": 100.0 * total[2] / n, "samples": int(total[3])}
