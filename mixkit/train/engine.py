"""The training loop on Accelerate: one process, several processes or several nodes.

Built on timm's factories (create_model, create_optimizer_v2, create_scheduler_v2, resolve_data_config,
its losses, ModelEmaV3 and Mixup) and mixkit's (create_mixup, create_loader). Accelerate does the process
group, DDP, mixed precision and the model/optimizer/scaler state; mixkit's loaders shard by rank
themselves, so they are not passed to ``prepare()``. Written here: the loop, exact resume (loader epoch and
position, RNG states at the epoch start), the NaN guard and the run directory.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from ..atomic import write_text_atomic
from .args import args_to_yaml_dict
from .checkpoint import (
    CheckpointError,
    CheckpointManager,
    find_checkpoint,
    get_rng_state,
    list_checkpoints,
    set_rng_state,
)
from .data import build_loaders, progressive_size, resolve_data_spec
from .progress import EpochProgress

__all__ = ["CheckpointError", "NonFiniteLossError", "build_mixup", "evaluate", "train", "validate_args", "weights_digest"]

# Test hook: make the loss NaN at this global step (batch count from the start of training).
INJECT_NAN_ENV = "MIXKIT_TRAIN_INJECT_NAN_STEP"
FEATURE_METHODS = ("manifold", "alignmixup")
SCHED_KEYS = ("sched", "epochs", "decay_epochs", "decay_milestones", "warmup_epochs", "cooldown_epochs",
              "decay_rate", "min_lr", "warmup_lr", "warmup_prefix", "sched_on_updates", "lr_cycle_mul",
              "lr_cycle_decay", "lr_cycle_limit", "lr_k_decay")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the run stopped without saving."""


def weights_digest(model: torch.nn.Module, *, params_only: bool = False) -> str:
    """SHA-256 of the model's state dict (names and bytes): equal digests mean bitwise-equal weights.

    ``params_only``: parameters without buffers (BatchNorm statistics differ across DDP ranks between
    synchronisations).
    """
    h = hashlib.sha256()
    items = model.named_parameters() if params_only else model.state_dict().items()
    for name, t in items:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def validate_args(args: argparse.Namespace) -> None:
    """Checks that need no data and no model; raises ValueError naming the fix."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.grad_accum_steps < 1:
        raise ValueError(f"--grad-accum-steps must be >= 1, got {args.grad_accum_steps}")
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.amp_dtype not in ("float16", "bfloat16"):
        raise ValueError(f"--amp-dtype must be float16 or bfloat16, got {args.amp_dtype!r}")
    if isinstance(args.mixup, str) and args.mixup in FEATURE_METHODS and (args.cutmix > 0 or args.cutmix_minmax):
        raise ValueError(f"--mixup {args.mixup} mixes features, not boxes: it cannot be combined with --cutmix / "
                         "--cutmix-minmax (set --cutmix 0, or use --mixup mixup_cutmix for timm's switch)")
    if not isinstance(args.mixup, str) and args.mixup_kwargs:
        raise ValueError("--mixup-kwargs sets a mixkit method's options: name the method with --mixup "
                         "(e.g. --mixup alignmixup --mixup-kwargs input_prob=0.5)")
    if args.input_size is not None and args.input_size[1] != args.input_size[2]:
        raise ValueError(f"--input-size {args.input_size}: only square images are supported, use equal H and W")
    from timm.optim import list_optimizers

    opt = args.opt.lower().split("_")[-1]
    if opt not in list_optimizers() and opt not in ("sgd", "nesterov", "momentum"):
        raise ValueError(f"unknown --opt {args.opt!r}: timm knows {', '.join(list_optimizers())}")


def _create_model(args: argparse.Namespace, num_classes: int, in_chans: int) -> torch.nn.Module:
    import timm

    import mixkit  # noqa: F401  (registers mixkit's timm models)

    if not timm.is_model(args.model):
        close = timm.list_models(f"*{args.model.split('.')[0][:6]}*")[:8]
        raise ValueError(f"unknown --model {args.model!r}: see timm.list_models()"
                         + (f"; close names: {', '.join(close)}" if close else ""))
    model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=num_classes, in_chans=in_chans,
                              drop_rate=args.drop, drop_path_rate=args.drop_path, global_pool=args.gp,
                              **args.model_kwargs)
    if args.initial_checkpoint:
        path = Path(args.initial_checkpoint)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(path)))
        else:
            from timm.models import load_checkpoint

            load_checkpoint(model, str(path))
    return model


def build_mixup(args: argparse.Namespace, model: torch.nn.Module, num_classes: int):
    """timm's Mixup for a float ``--mixup``/``--cutmix``, mixkit's method for a name; None when off.

    Feature-space methods hook the model given here: the unwrapped model, before DDP or compile.
    """
    if isinstance(args.mixup, str):
        from mixkit.mix import create_mixup

        kwargs: dict[str, Any] = dict(prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                                      label_smoothing=args.smoothing, num_classes=num_classes)
        if args.cutmix > 0:
            kwargs["cutmix_alpha"] = args.cutmix
        if args.cutmix_minmax:
            kwargs["cutmix_minmax"] = args.cutmix_minmax
        kwargs.update(args.mixup_kwargs)
        try:
            return create_mixup(args.mixup, model=model, **kwargs)
        except (ValueError, TypeError) as e:
            raise ValueError(f"--mixup {args.mixup} with --mixup-kwargs {args.mixup_kwargs or '{}'}: {e}") from e
    if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
        from timm.data import Mixup

        return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                     prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                     label_smoothing=args.smoothing, num_classes=num_classes)
    return None


def _resolve_lr(args: argparse.Namespace, world_size: int) -> None:
    # timm's rule: --lr-base per --lr-base-size images of global batch, scaled linearly (sqrt for ada*/lamb).
    if args.lr is not None:
        return
    global_batch = args.batch_size * world_size * args.grad_accum_steps
    ratio = global_batch / args.lr_base_size
    scale = args.lr_base_scale or ("sqrt" if any(o in args.opt.lower() for o in ("ada", "lamb")) else "linear")
    args.lr = args.lr_base * (ratio ** 0.5 if scale == "sqrt" else ratio)


def _experiment_name(args: argparse.Namespace, img_size: int) -> str:
    from timm.models import safe_model_name

    return "-".join([datetime.now().strftime("%Y%m%d-%H%M%S"), safe_model_name(args.model), str(img_size)])


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


def _read_summary(path: Path, before_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: (float(v) if k != "epoch" else int(v)) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    return [r for r in rows if r["epoch"] < before_epoch]


def _write_summary(run_dir: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    cols = ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "lr"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run_dir / "summary.csv", buf.getvalue())
    write_text_atomic(run_dir / "summary.json", json.dumps({**extra, "epochs": rows}, indent=1) + "\n")


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Runs ``mixkit-train`` with parsed arguments; returns the summary (also in summary.json).

    Raises:
        ValueError, FileNotFoundError: Bad arguments or data, before training starts.
        NonFiniteLossError: The loss became NaN/Inf; the last checkpoint is left as it was.
    """
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list
    from timm.data import resolve_data_config
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs
    from timm.utils import ModelEmaV3, dispatch_clip_grad, distribute_bn

    from mixkit.rundir import save_model_safetensors

    validate_args(args)
    spec = resolve_data_spec(args)
    resume_ckpt = resume_run = None
    if args.resume:
        resume_ckpt, resume_run = find_checkpoint(args.resume)

    accelerator = Accelerator(cpu=args.cpu, mixed_precision=("bf16" if args.amp_dtype == "bfloat16" else "fp16")
                              if args.amp else None)
    rank, world = accelerator.process_index, accelerator.num_processes
    # timm's seeding: the same model init everywhere (DDP broadcasts rank 0's anyway), per-rank streams.
    torch.manual_seed(args.seed)
    _resolve_lr(args, world)

    if args.input_size is not None:
        args.in_chans, args.img_size = args.input_size[0], args.input_size[1]
    in_chans = args.in_chans or spec.in_chans
    if spec.dataset == "" and in_chans != 3:
        raise ValueError(f"--in-chans {in_chans}: ImageFolder loaders yield RGB images; use 3")
    num_classes = args.num_classes or spec.num_classes
    if num_classes is None:
        raise ValueError(f"cannot count the classes of {spec.train_source}: pass --num-classes")
    if spec.num_classes and num_classes < spec.num_classes:
        raise ValueError(f"--num-classes {num_classes} is fewer than the {spec.num_classes} classes of the data")
    model = _create_model(args, num_classes, in_chans)
    mixup_fn = build_mixup(args, model, num_classes)  # hooks go on the unwrapped model, before DDP/compile

    cfg = resolve_data_config({**vars(args), "in_chans": in_chans}, model=model)
    img_size = args.img_size or (spec.native_size if spec.native_size else cfg["input_size"][-1])
    mean = tuple(args.mean) if args.mean else (spec.default_mean or cfg["mean"])
    std = tuple(args.std) if args.std else (spec.default_std or cfg["std"])
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"mean {mean} / std {std} must have {in_chans} values (one per input channel): "
                         "pass --mean/--std")
    crop_pct = args.crop_pct or cfg.get("crop_pct", 0.875)
    loader_kw = dict(mean=mean, std=std, crop_pct=crop_pct, interpolation=args.interpolation, rank=rank,
                     world_size=world, device=accelerator.device)
    train_size = progressive_size(0, args.prog_res, img_size)
    train_loader, eval_loader = build_loaders(args, spec, img_size=train_size,
                                              eval_img_size=args.eval_img_size or img_size, **loader_kw)
    if len(train_loader) == 0:
        raise ValueError(f"the training shard of rank {rank} has {train_loader.shard_size} samples, fewer than "
                         f"one batch of {args.batch_size}: lower --batch-size")

    # Run directory: the resumed run's, or <output>/<experiment> (the timestamp comes from the main process).
    if resume_run is not None and not args.experiment:
        run_dir = resume_run
    else:
        name = [args.experiment or _experiment_name(args, img_size)]
        broadcast_object_list(name)
        run_dir = Path(args.output or "./output/train") / name[0]
    resolved = dict(model=args.model, model_kwargs=dict(args.model_kwargs), num_classes=num_classes,
                    in_chans=in_chans, img_size=img_size, mean=list(mean), std=list(std), crop_pct=crop_pct,
                    dataset=spec.dataset, data_dir=str(spec.train_source if spec.dataset else args.data_dir),
                    val_split="test" if spec.dataset == "fashion_mnist" else args.val_split)
    if resume_ckpt is None and list_checkpoints(run_dir):
        raise ValueError(f"run directory {run_dir} already holds checkpoints: continue it with --resume {run_dir}, "
                         "or choose another --experiment (nothing is overwritten)")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "args.yaml", yaml.safe_dump({**args_to_yaml_dict(args), **resolved},
                                                            sort_keys=True))

    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(accelerator.device)
    model_ema = None
    if args.model_ema:
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    accum = args.grad_accum_steps
    n_batches = len(train_loader)
    updates_per_epoch = (n_batches + accum - 1) // accum
    sched_kwargs = scheduler_kwargs(args)
    scheduler, num_epochs = create_scheduler_v2(optimizer, **sched_kwargs, updates_per_epoch=updates_per_epoch)
    # prepare() does not wrap timm's schedulers: registering them puts them into save_state/load_state.
    accelerator.register_for_checkpointing(scheduler)
    if model_ema is not None:
        accelerator.register_for_checkpointing(model_ema)

    if mixup_fn is not None:
        train_loss_fn = SoftTargetCrossEntropy()
    elif args.smoothing:
        train_loss_fn = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        train_loss_fn = torch.nn.CrossEntropyLoss()

    ckpts = CheckpointManager(run_dir, accelerator, keep=args.checkpoint_hist)
    start_epoch, start_batch, num_updates = 0, 0, 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    loss_count = 0
    resume_state = None
    if resume_ckpt is not None:
        resume_state, meta = ckpts.load(resume_ckpt)
        start_epoch, start_batch = int(resume_state["epoch"]), int(resume_state["batch"])
        num_updates = int(resume_state["num_updates"])
        loss_sum.fill_(float(resume_state["loss_sum"]))
        loss_count = int(resume_state["loss_count"])
        if mixup_fn is not None and "mixup_enabled" in resume_state:
            mixup_fn.mixup_enabled = bool(resume_state["mixup_enabled"])
        saved_sched = meta.get("sched_kwargs", {})
        if any(saved_sched.get(k) != v for k, v in sched_kwargs.items() if k in saved_sched):
            # The schedule was changed on the command line (e.g. more --epochs): follow the new one.
            fresh, _ = create_scheduler_v2(optimizer, **sched_kwargs, updates_per_epoch=updates_per_epoch)
            scheduler.load_state_dict(fresh.state_dict())
            if args.sched_on_updates:
                scheduler.step_update(num_updates)
            else:
                scheduler.step(start_epoch)
            accelerator.print(f"resume: schedule settings changed since {resume_ckpt.name}; following the new ones")
        accelerator.print(f"resumed from {resume_ckpt} (epoch {start_epoch}, batch {start_batch}, "
                          f"{num_updates} updates)")
    elif start_epoch == 0:
        # timm's per-rank seeding for augmentation and mixing; the model was initialised above already.
        torch.manual_seed(args.seed + rank)
        import random

        import numpy as np

        random.seed(args.seed + rank)
        np.random.seed(args.seed + rank)  # noqa: NPY002 (timm's Mixup and mixkit's methods draw from it)

    rows = _read_summary(run_dir / "summary.csv", start_epoch) if accelerator.is_main_process else []
    tb = None
    if accelerator.is_main_process:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(run_dir / "tensorboard"))
    inject_nan = int(os.environ.get(INJECT_NAN_ENV, "-1"))
    check_every = 1 if accelerator.device.type == "cpu" else max(1, args.log_interval)
    bad_step = torch.full((), -1, dtype=torch.int64, device=accelerator.device)
    last_ckpt = [resume_ckpt]

    def check_finite(step: int) -> None:
        worst = bad_step
        if world > 1:  # every rank stops together (a rank that raised alone would hang the others)
            worst = bad_step.clone()
            torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
        at = int(worst.item())
        if at >= 0:
            e, b = divmod(at, n_batches)
            raise NonFiniteLossError(
                f"non-finite loss (NaN/Inf) at step {at} (epoch {e}, batch {b}): training stopped without saving; "
                f"the last good checkpoint is {last_ckpt[0] or 'none (no checkpoint was written yet)'}. Lower --lr, "
                "set --clip-grad, or use --amp-dtype bfloat16, then --resume from that checkpoint.")

    def save(epoch: int, batch: int, epoch_rng: dict[str, Any]) -> None:
        check_finite(epoch * n_batches + batch)
        state = {"epoch": epoch, "batch": batch, "num_updates": num_updates, "loss_sum": float(loss_sum.item()),
                 "loss_count": loss_count, "rng": get_rng_state(), "epoch_rng": epoch_rng,
                 "mixup_enabled": bool(getattr(mixup_fn, "mixup_enabled", True)),
                 # For checks across ranks: DDP keeps the weights equal, the loaders keep the shards disjoint.
                 "weights_sha256": weights_digest(unwrapped),
                 "params_sha256": weights_digest(unwrapped, params_only=True),
                 "train_shard": torch.as_tensor(getattr(train_loader, "indices", []), dtype=torch.int64)}
        last_ckpt[0] = ckpts.save(epoch=epoch, batch=batch, train_state=state,
                                  meta={"num_updates": num_updates, "sched_kwargs": sched_kwargs})

    show_bar = accelerator.is_main_process and not args.no_progress
    last_accum = n_batches % accum
    last_to_accum = n_batches - last_accum
    eval_metrics: dict[str, float] = {}
    t_start, cpu_start = time.perf_counter(), time.process_time()
    images_seen = 0
    for epoch in range(start_epoch, num_epochs):
        if mixup_fn is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            mixup_fn.mixup_enabled = False
        size = progressive_size(epoch, args.prog_res, img_size)
        if size != train_size:  # FFCV-style progressive resizing: a loader for the new side, same shards
            train_size = size
            train_loader, _ = build_loaders(args, spec, img_size=size, with_eval=False, **loader_kw)
            accelerator.print(f"epoch {epoch}: training at {size} px")
        resuming = resume_state is not None and epoch == start_epoch
        if resuming:
            epoch_rng = resume_state["epoch_rng"]
            set_rng_state(epoch_rng)  # replays the loader's shuffle and worker seeds of this epoch
        else:
            epoch_rng = get_rng_state()
        first = start_batch if resuming else 0
        if first == 0:  # a resumed partial epoch keeps the loss of its batches before the checkpoint
            loss_sum.zero_()
            loss_count = 0
        train_loader.set_epoch(epoch)
        it = iter(train_loader)
        for _ in range(first):  # replays the skipped batches: the only way to reproduce workers' RNG streams
            next(it)
        if resuming:
            set_rng_state(resume_state["rng"])
        model.train()
        bar = EpochProgress(n_batches, epoch=epoch, start=first, enabled=show_bar, world_size=world)
        since_ckpt = 0
        for batch_idx in range(first, n_batches):
            x, y = next(it)
            bar.wait_done()
            step = epoch * n_batches + batch_idx
            need_update = batch_idx == n_batches - 1 or (batch_idx + 1) % accum == 0
            div = last_accum if (batch_idx >= last_to_accum and last_accum) else accum
            if mixup_fn is not None:
                x, y = mixup_fn(x, y)  # right before the forward: feature methods arm their hook here
            sync = contextlib.nullcontext() if need_update else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    loss = train_loss_fn(model(x), y)
                if step == inject_nan:
                    loss = loss * float("nan")
                accelerator.backward(loss / div if div > 1 else loss)
            detached = loss.detach()
            bad_step.copy_(torch.where((bad_step < 0) & ~torch.isfinite(detached), step, bad_step))
            loss_sum += detached.double() * len(x)
            loss_count += len(x)
            if need_update:
                if args.clip_grad is not None:
                    accelerator.unscale_gradients()
                    dispatch_clip_grad(model.parameters(), value=args.clip_grad, mode=args.clip_mode)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                num_updates += 1
                if model_ema is not None:
                    model_ema.update(unwrapped, step=num_updates)
                scheduler.step_update(num_updates=num_updates)
            bar.step_done(len(x))
            images_seen += len(x) * world
            if (batch_idx + 1) % check_every == 0:
                check_finite(step)
            if show_bar and ((batch_idx + 1) % args.log_interval == 0 or batch_idx == n_batches - 1):
                bar.show(loss=float((loss_sum / max(loss_count, 1)).item()), lr=optimizer.param_groups[0]["lr"])
            since_ckpt += 1
            if (args.checkpoint_steps and need_update and since_ckpt >= args.checkpoint_steps
                    and batch_idx + 1 < n_batches):
                save(epoch, batch_idx + 1, epoch_rng)
                since_ckpt = 0
        bar.close()
        check_finite(epoch * n_batches + n_batches - 1)
        if world > 1 and args.dist_bn in ("broadcast", "reduce"):
            # timm's --dist-bn: make BatchNorm statistics equal across ranks before evaluating and saving.
            distribute_bn(model, world, reduce=args.dist_bn == "reduce")
        train_loss = float(accelerator.reduce(loss_sum.clone(), reduction="sum").item()) / max(loss_count * world, 1)
        if eval_loader is not None:
            eval_metrics = evaluate(model, eval_loader, accelerator, hflip_tta=args.eval_hflip_tta)
            if model_ema is not None:
                eval_metrics = {**evaluate(model_ema.module, eval_loader, accelerator, hflip_tta=args.eval_hflip_tta),
                                "model": "ema"}
        lrs = [g["lr"] for g in optimizer.param_groups]
        scheduler.step(epoch + 1, eval_metrics.get(args.eval_metric, eval_metrics.get("top1")))
        row = {"epoch": epoch, "train_loss": train_loss, "eval_loss": eval_metrics.get("loss"),
               "eval_top1": eval_metrics.get("top1"), "eval_top5": eval_metrics.get("top5"),
               "lr": sum(lrs) / len(lrs)}
        line = f"epoch {epoch}: train_loss {train_loss:.4f}"
        if eval_metrics:
            line += (f" eval_loss {eval_metrics['loss']:.4f} top1 {eval_metrics['top1']:.2f} "
                     f"top5 {eval_metrics['top5']:.2f} ({eval_metrics['samples']} samples)")
        accelerator.print(line)
        if accelerator.is_main_process:
            rows.append(row)
            _write_summary(run_dir, rows, {"run_dir": str(run_dir), "world_size": world, "complete": False})
            if tb is not None:
                for k, v in row.items():
                    if k != "epoch" and v is not None:
                        tb.add_scalar(k, v, epoch)
        save(epoch + 1, 0, epoch_rng)
        resume_state = None

    elapsed = time.perf_counter() - t_start
    summary = {"run_dir": str(run_dir), "world_size": world, "complete": True, "epochs_trained": num_epochs,
               "num_updates": num_updates, "eval_samples": eval_metrics.get("samples"),
               "final": rows[-1] if rows else None, "train_seconds": elapsed,
               "images_per_second": images_seen / elapsed if elapsed > 0 else None,
               "process_cpu_seconds": time.process_time() - cpu_start,
               "global_batch_size": args.batch_size * world * accum}
    if accelerator.is_main_process:
        save_model_safetensors(unwrapped, run_dir / "model.safetensors")
        if model_ema is not None:
            save_model_safetensors(model_ema.module, run_dir / "model_ema.safetensors")
        _write_summary(run_dir, rows, {k: v for k, v in summary.items() if k != "final"})
        if tb is not None:
            tb.close()
    accelerator.wait_for_everyone()
    if mixup_fn is not None and hasattr(mixup_fn, "remove"):
        mixup_fn.remove()
    accelerator.end_training()
    return summary


