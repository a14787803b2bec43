"""Trainable parts of a mixing method (``extra_modules()``): optimizer groups and gradients across processes.

A method's parts are trained beside the model but never wrapped in DistributedDataParallel: a step may use
them on some processes and not on others (AlignMixup/AE's decoder in the input-mixup branch, say), which
DDP cannot express (an unused-parameter error, or a hang waiting for the reduction). Instead
``sync_part_gradients`` averages their gradients across processes in one collective per optimizer update,
counting a process that did not use a part as a zero gradient (DDP's own averaging rule), and leaving the
gradients None where no process used them, so the optimizer skips them as it would without mixkit. The
parts' buffers (BatchNorm statistics) follow rank 0's, as DDP's ``broadcast_buffers`` does for the model.
Written here because neither torch nor Accelerate averages gradients of modules outside DDP.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["add_part_param_groups", "broadcast_parts", "part_parameters", "sync_part_gradients"]


def part_parameters(parts: Mapping[str, nn.Module]) -> list[nn.Parameter]:
    """The trainable parameters of the parts, in name order (the order every process agrees on)."""
    return [p for name in sorted(parts) for p in parts[name].parameters() if p.requires_grad]


def add_part_param_groups(optimizer: torch.optim.Optimizer, parts: Mapping[str, nn.Module], *,
                          weight_decay: float) -> None:
    """Adds the parts' parameters to ``optimizer`` with timm's weight-decay split (no decay on biases and
    norms, ``timm.optim.param_groups_weight_decay``); the other settings are the optimizer's defaults.
    Call it before creating the lr scheduler, which reads every group's initial lr."""
    from timm.optim import param_groups_weight_decay

    for name in sorted(parts):
        for group in param_groups_weight_decay(parts[name], weight_decay=weight_decay):
            if group["params"]:
                optimizer.add_param_group(group)


def _broadcast_from_rank0(tensors: list[torch.Tensor]) -> None:
    """Rank 0's values into ``tensors`` in place, one collective per dtype (flattened)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    with torch.no_grad():
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].reshape(t.shape))
                offset += t.numel()


def _buffers(parts: Mapping[str, nn.Module]) -> list[torch.Tensor]:
    return [b for name in sorted(parts) for b in parts[name].buffers()]


def broadcast_parts(parts: Mapping[str, nn.Module]) -> None:
    """Gives every process rank 0's weights and buffers of the parts (what DDP does for the model when it
    wraps it): the parts start equal however each process seeded, and averaged gradients keep them equal.
    A no-op in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    _broadcast_from_rank0([p.data for name in sorted(parts) for p in parts[name].parameters()] + _buffers(parts))


def sync_part_gradients(parts: Mapping[str, nn.Module]) -> None:
    """Averages the parts' gradients over the processes and gives them rank 0's buffers (a no-op in one
    process).

    Every process must call it at the same point (before the optimizer step, after the last backward of
    the update). A gradient None counts as zero; after the call it is None only where no process had one.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    _broadcast_from_rank0(_buffers(parts))  # BatchNorm statistics: rank 0's, as DDP's broadcast_buffers
    params = part_parameters(parts)
    if not params:
        return
    world = dist.get_world_size()
    used = torch.tensor([float(any(p.grad is not None for p in params))], device=params[0].device)
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for dtype, group in by_dtype.items():
        grads = [torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1) for p in group]
        flat = torch.cat(grads + ([used.to(dtype)] if dtype == params[0].dtype else []))
        dist.all_reduce(flat)
        if dtype == params[0].dtype:
            used, flat = flat[-1:], flat[:-1]
        offset = 0
        for p in group:
            n = p.numel()
            p.grad = (flat[offset:offset + n] / world).reshape(p.shape).clone()
            offset += n
    if float(used.item()) == 0:  # no process used the parts this update: nothing to step
        for p in params:
            p.grad = None
