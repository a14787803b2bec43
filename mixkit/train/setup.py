"""``mixkit-train``'s set-up: from parsed arguments to a ``Run`` the epoch loop uses.

Built on timm's factories (create_model, create_optimizer_v2, create_scheduler_v2, resolve_data_config,
its losses, ModelEmaV3 and Mixup) and mixkit's (``timm_compat.create_timm_mixup``, the one path from
``--mixup`` to a mixing function that users' train.py takes too; create_loader). Accelerate does the process
group, DDP, mixed precision and the model/optimizer/scaler state; mixkit's loaders shard by rank
themselves, so they are not passed to ``prepare()``. The parsed arguments are never modified: what set-up
resolves (lr, sizes, channels, statistics) is in ``Run`` and in ``args.yaml``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..atomic import write_text_atomic
from ..mix import MixupBase
from ..mix.parts import add_part_param_groups, broadcast_parts
from ..timm_compat import check_timm_mixup, create_timm_mixup, mixup_active, timm_mixup_args
from .args import args_to_yaml_dict
from .best import restore_best
from .checkpoint import CheckpointManager, find_checkpoint, list_checkpoints
from .data import DataSpec, build_loaders, eval_split_name, progressive_size, resolve_data_spec
from .state import TrainState
from .summary import read_summary, summary_columns
from .tracking import resolve_log_with, tracker_init_kwargs

__all__ = ["Run", "build_mixup", "check_grad_checkpointing", "convert_sync_bn", "create_train_loss",
           "load_method_state", "method_state", "resolve_lr", "setup", "validate_args"]


# timm.scheduler.create_scheduler_v2's names (timm 1.0.31's docstring; timm has no list to ask). Its 'none'
# is left out: the engine steps a schedule every epoch.
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "constant", "wsd", "rsqrt")


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
    check_timm_mixup(timm_mixup_args(args, num_classes=args.num_classes or 1000), args.mixup_kwargs)
    _check_aug_splits(args)
    for flag, values in (("--scale", args.scale), ("--ratio", args.ratio)):
        if len(values) != 2:
            raise ValueError(f"{flag} takes two numbers (low high), got {' '.join(map(str, values))}")
    if args.input_size is not None and args.input_size[1] != args.input_size[2]:
        raise ValueError(f"--input-size {args.input_size}: only square images are supported, use equal H and W")
    if args.loader == "memory":
        raise ValueError("--loader memory is mixkit.data's Python-only backend (tensors already in memory): from "
                         "the command line use --dataset fashion_mnist (read into memory) or --loader torch/ffcv/dali")
    if args.bce_target_thresh is not None and not args.bce_loss:
        raise ValueError("--bce-target-thresh applies to --bce-loss: add --bce-loss or drop it")
    if (args.bce_sum or args.bce_pos_weight is not None) and not args.bce_loss:
        raise ValueError("--bce-sum / --bce-pos-weight apply to --bce-loss: add --bce-loss or drop them")
    if args.sched not in SCHEDULERS:
        raise ValueError(f"unknown --sched {args.sched!r}: timm's create_scheduler_v2 knows {', '.join(SCHEDULERS)}")
    from timm.optim import list_optimizers

    opt = args.opt.lower().split("_")[-1]
    if opt not in list_optimizers() and opt not in ("sgd", "nesterov", "momentum"):
        raise ValueError(f"unknown --opt {args.opt!r}: timm knows {', '.join(list_optimizers())}")


def _check_aug_splits(args: argparse.Namespace) -> None:
    """timm's rules for --aug-splits, --jsd-loss, --split-bn and --resplit (train.py's asserts, as messages), and
    no mixing with splits: timm's train.py refuses mixup with splits (its collate cannot de-interleave them), and
    a mix of views of one image would mix across splits that JSD and split BatchNorm tell apart."""
    splits = args.aug_splits
    if splits < 0 or splits == 1:
        raise ValueError(f"--aug-splits is 0 (off) or >= 2 (a clean split and augmented ones), got {splits}")
    if splits and mixup_active(timm_mixup_args(args, num_classes=args.num_classes or 1000)):
        raise ValueError(f"--aug-splits {splits} does not combine with mixing (--mixup {args.mixup}, --cutmix "
                         f"{args.cutmix}): timm's train.py refuses the pair too. Drop the mixing, or --aug-splits "
                         "(and --jsd-loss / --split-bn)")
    if args.jsd_loss and splits < 2:
        raise ValueError("--jsd-loss compares the augmentation splits: add --aug-splits 3 (e.g. with --aa "
                         "augmix-m5-w4-d2, timm's AugMix recipe), or drop it")
    if args.jsd_loss and args.bce_loss:
        raise ValueError("--jsd-loss and --bce-loss are two training losses: choose one (timm's train.py uses JSD)")
    if args.split_bn and splits < 2:
        raise ValueError("--split-bn keeps BatchNorm statistics per augmentation split: add --aug-splits >= 2, or "
                         "drop it")
    if args.split_bn and args.sync_bn:
        raise ValueError("--split-bn and --sync-bn exclude each other (timm's train.py asserts the same): drop one")
    if args.resplit and splits < 2:
        raise ValueError("--resplit spares the clean augmentation split from random erasing: add --aug-splits >= 2, "
                         "or drop it")
    if args.resplit and not args.reprob:
        raise ValueError("--resplit changes random erasing, which is off: add --reprob (e.g. 0.25), or drop it")


def build_mixup(args: argparse.Namespace, model: nn.Module, num_classes: int) -> Any:
    """The mixing function of ``--mixup`` (timm's Mixup for a number, mixkit's method for a name), or None
    when mixing is off (timm's rule). Feature-space methods hook the model given here: the unwrapped model,
    before DDP or compile."""
    mixup_args = timm_mixup_args(args, num_classes)
    if not mixup_active(mixup_args):
        return None
    return create_timm_mixup(model, mixup_args, **args.mixup_kwargs)


def resolve_lr(args: argparse.Namespace, world_size: int) -> float:
    """``--lr``, or timm's rule: ``--lr-base`` per ``--lr-base-size`` images of global batch, scaled linearly
    (sqrt for ada*/lamb)."""
    if args.lr is not None:
        return args.lr
    global_batch = args.batch_size * world_size * args.grad_accum_steps
    ratio = global_batch / args.lr_base_size
    scale = args.lr_base_scale or ("sqrt" if any(o in args.opt.lower() for o in ("ada", "lamb")) else "linear")
    return args.lr_base * (ratio ** 0.5 if scale == "sqrt" else ratio)


def _create_model(args: argparse.Namespace, num_classes: int, in_chans: int) -> nn.Module:
    import timm

    import mixkit  # noqa: F401  (registers mixkit's timm models)

    if not timm.is_model(args.model):
        close = timm.list_models(f"*{args.model.split('.')[0][:6]}*")[:8]
        raise ValueError(f"unknown --model {args.model!r}: see timm.list_models()"
                         + (f"; close names: {', '.join(close)}" if close else ""))
    model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=num_classes, in_chans=in_chans,
                              drop_rate=args.drop, drop_path_rate=args.drop_path, drop_block_rate=args.drop_block,
                              global_pool=args.gp, **args.model_kwargs)
    if args.initial_checkpoint:
        path = Path(args.initial_checkpoint)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(path)))
        else:
            from timm.models import load_checkpoint

            load_checkpoint(model, str(path))
    if args.grad_checkpointing:
        if not callable(getattr(model, "set_grad_checkpointing", None)):
            raise ValueError(f"--grad-checkpointing: {args.model} has no set_grad_checkpointing(); drop the flag")
        model.set_grad_checkpointing(enable=True)
    return model


def check_grad_checkpointing(args: argparse.Namespace, model: nn.Module) -> None:
    """Refuses --grad-checkpointing with a mixing method that hooks a layer of the model: timm's checkpointing
    runs a stage's blocks without calling the stage module (timm.models.checkpoint_seq), so the hook would
    never fire (docs/mixing.md, "Gradient checkpointing")."""
    hooked = sorted(name for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks)
    if args.grad_checkpointing and hooked:
        raise ValueError(f"--grad-checkpointing with --mixup {args.mixup}: the method hooks {', '.join(hooked)}, "
                         "which timm's checkpointing never calls, so nothing would be mixed. Drop "
                         "--grad-checkpointing, or use an input-space method (e.g. --mixup 0.2, cutmix)")


def convert_sync_bn(args: argparse.Namespace, model: nn.Module, world_size: int) -> nn.Module:
    """--sync-bn: timm's convert_sync_batchnorm on several processes (as timm's train.py, which converts only
    when distributed); one process has nothing to synchronise, so the model is returned unchanged."""
    if not args.sync_bn or world_size < 2:
        return model
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


def create_train_loss(args: argparse.Namespace, mixing: bool) -> nn.Module:
    """timm train.py's training loss: BCE (--bce-loss) or soft-target cross-entropy on mixed targets, BCE with
    smoothing, label smoothing or plain cross-entropy on hard ones."""
    from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    bce = dict(target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum, pos_weight=args.bce_pos_weight)
    if args.jsd_loss:  # validate_args: only with --aug-splits, without mixing and BCE
        from timm.loss import JsdCrossEntropy

        return JsdCrossEntropy(num_splits=args.aug_splits, smoothing=args.smoothing)
    if mixing:  # the mixing function's soft targets carry the label smoothing already
        return BinaryCrossEntropy(**bce) if args.bce_loss else SoftTargetCrossEntropy()
    if args.smoothing:
        if args.bce_loss:
            return BinaryCrossEntropy(smoothing=args.smoothing, **bce)
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    # timm's train.py has no BCE without smoothing; BinaryCrossEntropy(smoothing=0) is that loss.
    return BinaryCrossEntropy(smoothing=0.0, **bce) if args.bce_loss else torch.nn.CrossEntropyLoss()


def _check_img_size(model: nn.Module, img_size: int, name: str) -> None:
    """Refuses an image smaller than the model's total stride: its last feature map would be a padding
    artefact of 1x1 cells computed from less than one input pixel each (a silent, meaningless run)."""
    from ..mix.layers import feature_info_entries

    stages = feature_info_entries(model)
    reduction = int(stages[-1]["reduction"]) if stages else 1
    if img_size < max(reduction, 2):
        raise ValueError(f"--img-size {img_size} is smaller than {name}'s total stride {reduction} (its last feature "
                         f"map would have less than one input pixel per cell): use --img-size >= {max(reduction, 2)}")


def _experiment_name(args: argparse.Namespace, img_size: int) -> str:
    from timm.models import safe_model_name

    return "-".join([datetime.now().strftime("%Y%m%d-%H%M%S"), safe_model_name(args.model), str(img_size)])


def _data_config(args: argparse.Namespace, in_chans: int, img_size: int | None, model: nn.Module) -> dict[str, Any]:
    from timm.data import resolve_data_config

    # The keys timm's resolve_data_config reads, passed by name (not vars(args)): every flag is read here.
    given = dict(in_chans=in_chans, input_size=args.input_size, img_size=img_size, crop_pct=args.crop_pct,
                 interpolation=args.interpolation, mean=args.mean, std=args.std)
    return resolve_data_config(given, model=model)


@dataclass
class Run:
    """What set-up builds and the epoch loop uses."""

    args: argparse.Namespace
    accelerator: Any
    spec: DataSpec
    run_dir: Path
    model: nn.Module  # prepared (DDP-wrapped on several processes, compiled with --torchcompile)
    unwrapped: nn.Module
    optimizer: Any
    scheduler: Any
    num_epochs: int
    sched_kwargs: dict[str, Any]
    mixup_fn: Any
    parts: dict[str, nn.Module]
    model_ema: Any
    part_emas: dict[str, Any]
    train_loader: Any
    eval_loader: Any
    loader_kw: dict[str, Any]
    img_size: int
    train_size: int
    loss_fn: nn.Module
    ckpts: CheckpointManager
    state: TrainState
    lr: float
    resolved: dict[str, Any]
    resume_ckpt: Path | None = None
    resume_rng: dict[str, Any] | None = None  # the RNG states to restore after replaying a partial epoch
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    extra_loss_name: str | None = None
    last_ckpt: Path | None = None
    bad_step: torch.Tensor | None = None
    images_seen: int = 0

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def n_batches(self) -> int:
        return len(self.train_loader)


def method_state(mixup_fn: Any) -> dict[str, Any]:
    """The mixing function's checkpoint state (timm's Mixup has only its ``mixup_enabled`` switch)."""
    if isinstance(mixup_fn, MixupBase):
        return mixup_fn.state_dict()
    return {"mixup_enabled": bool(getattr(mixup_fn, "mixup_enabled", True))}


def load_method_state(mixup_fn: Any, state: dict[str, Any]) -> None:
    """Restores ``method_state``."""
    if isinstance(mixup_fn, MixupBase):
        mixup_fn.load_state_dict(state)
    elif mixup_fn is not None and "mixup_enabled" in state:
        mixup_fn.mixup_enabled = bool(state["mixup_enabled"])


def setup(args: argparse.Namespace) -> Run:
    """Checks the arguments and the data, builds everything, and restores ``--resume``'s checkpoint.

    Raises:
        ValueError, FileNotFoundError: Bad arguments or data, before training starts.
    """
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs
    from timm.utils import ModelEmaV3

    validate_args(args)
    spec = resolve_data_spec(args)
    resume_ckpt = resume_run = None
    if args.resume:
        resume_ckpt, resume_run = find_checkpoint(args.resume)

    log_with = resolve_log_with(args.log_with, args.log_wandb)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=("bf16" if args.amp_dtype == "bfloat16" else "fp16")
                              if args.amp else None, log_with=log_with or None,
                              # Accelerate wants a logging dir now; init_trackers below points it at the run.
                              project_dir=(args.output or "./output/train") if log_with else None)
    rank, world = accelerator.process_index, accelerator.num_processes
    # timm's seeding: the same model init everywhere (DDP broadcasts rank 0's anyway), per-rank streams.
    torch.manual_seed(args.seed)
    lr = resolve_lr(args, world)

    in_chans, img_size_arg = args.in_chans, args.img_size
    if args.input_size is not None:
        in_chans, img_size_arg = args.input_size[0], args.input_size[1]
    in_chans = in_chans or spec.in_chans
    if spec.dataset in ("", "cub") and in_chans != 3:
        raise ValueError(f"--in-chans {in_chans}: ImageFolder loaders yield RGB images; use 3")
    num_classes = args.num_classes or spec.num_classes
    if num_classes is None:
        raise ValueError(f"cannot count the classes of {spec.train_source}: it names none (a .beton without its "
                         "<file>.json sidecar, or tar shards without the <prefix>.json index that `mixkit convert` "
                         "writes): pass --num-classes, or convert the ImageFolder again with `mixkit convert`")
    if spec.num_classes and num_classes < spec.num_classes:
        raise ValueError(f"--num-classes {num_classes} is fewer than the {spec.num_classes} classes of the data")
    model = _create_model(args, num_classes, in_chans)
    if args.split_bn:  # as timm's train.py: right after create_model, one BatchNorm per augmentation split
        from timm.layers import convert_splitbn_model

        model = convert_splitbn_model(model, args.aug_splits)
    mixup_fn = build_mixup(args, model, num_classes)  # hooks go on the unwrapped model, before DDP/compile
    check_grad_checkpointing(args, model)
    parts = mixup_fn.extra_modules() if isinstance(mixup_fn, MixupBase) else {}

    cfg = _data_config(args, in_chans, img_size_arg, model)
    img_size = img_size_arg or (spec.native_size if spec.native_size else cfg["input_size"][-1])
    _check_img_size(model, img_size, args.model)
    mean = tuple(args.mean) if args.mean else (spec.default_mean or cfg["mean"])
    std = tuple(args.std) if args.std else (spec.default_std or cfg["std"])
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"mean {mean} / std {std} must have {in_chans} values (one per input channel): "
                         "pass --mean/--std")
    if hasattr(mixup_fn, "set_input_normalization"):  # methods reading pixel values (PuzzleMix)
        mixup_fn.set_input_normalization(mean, std)
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
                    val_split=eval_split_name(spec.dataset, args.val_split), lr=lr,
                    parts=sorted(parts), classes=train_loader.classes,
                    # What ran: `accelerate launch --mixed_precision` overrides --amp (Accelerate reads its env).
                    mixed_precision=accelerator.mixed_precision, log_with=log_with)
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
    model = convert_sync_bn(args, model, world)
    if args.sync_bn and world < 2:
        accelerator.print("--sync-bn: one process, nothing to synchronise; BatchNorm kept as it is")
    for part in parts.values():
        part.to(accelerator.device)
    broadcast_parts(parts)  # every rank starts from rank 0's parts, as DDP does for the model
    model_ema = part_emas = None
    if args.model_ema:
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup)
        part_emas = {name: ModelEmaV3(part, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup)
                     for name, part in parts.items()}
    optimizer = create_optimizer_v2(model, **{**optimizer_kwargs(cfg=args), "lr": lr, **args.opt_kwargs})
    # The method's parts join the optimizer (never the model: the classifier's state dict stays timm's), before
    # the scheduler reads every group's initial lr.
    add_part_param_groups(optimizer, parts, weight_decay=args.weight_decay)
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    updates_per_epoch = (len(train_loader) + args.grad_accum_steps - 1) // args.grad_accum_steps
    sched_kwargs = scheduler_kwargs(args)
    scheduler, num_epochs = create_scheduler_v2(optimizer, **sched_kwargs, updates_per_epoch=updates_per_epoch)
    # prepare() does not wrap timm's schedulers: registering them puts them into save_state/load_state. The
    # parts are not prepared (no DDP: their gradients are averaged by sync_part_gradients) but checkpointed.
    accelerator.register_for_checkpointing(scheduler)
    if model_ema is not None:
        accelerator.register_for_checkpointing(model_ema)
    for name in sorted(parts):
        accelerator.register_for_checkpointing(parts[name])
        if part_emas:
            accelerator.register_for_checkpointing(part_emas[name])

    loss_fn = create_train_loss(args, mixing=mixup_fn is not None)

    state = TrainState()
    state.loss_sum = state.loss_sum.to(accelerator.device)
    state.extra_sum = state.extra_sum.to(accelerator.device)
    ckpts = CheckpointManager(run_dir, accelerator, keep=args.checkpoint_hist)
    resume_rng = None
    if resume_ckpt is not None:
        saved, meta = ckpts.load(resume_ckpt)
        state, resume_rng = TrainState.from_checkpoint(saved, accelerator.device)
        load_method_state(mixup_fn, state.mixup)
        if accelerator.is_main_process and state.best is not None:
            # The best of the checkpoint's time: a later epoch of an abandoned continuation may have replaced it.
            restore_best(resume_ckpt, run_dir)
        saved_sched = meta.get("sched_kwargs", {})
        if any(saved_sched.get(k) != v for k, v in sched_kwargs.items() if k in saved_sched):
            # The schedule was changed on the command line (e.g. more --epochs): follow the new one.
            fresh, _ = create_scheduler_v2(optimizer, **sched_kwargs, updates_per_epoch=updates_per_epoch)
            scheduler.load_state_dict(fresh.state_dict())
            if args.sched_on_updates:
                scheduler.step_update(state.num_updates)
            else:
                scheduler.step(state.epoch)
            accelerator.print(f"resume: schedule settings changed since {resume_ckpt.name}; following the new ones")
        accelerator.print(f"resumed from {resume_ckpt} (epoch {state.epoch}, batch {state.batch}, "
                          f"{state.num_updates} updates)")
    else:
        # timm's per-rank seeding for augmentation and mixing; the model was initialised above already.
        _seed_rank(args.seed + rank)

    extra_loss_name = getattr(mixup_fn, "extra_loss_name", None) if isinstance(mixup_fn, MixupBase) else None
    run = Run(args=args, accelerator=accelerator, spec=spec, run_dir=run_dir, model=model, unwrapped=unwrapped,
              optimizer=optimizer, scheduler=scheduler, num_epochs=num_epochs, sched_kwargs=sched_kwargs,
              mixup_fn=mixup_fn, parts=parts, model_ema=model_ema, part_emas=part_emas or {},
              train_loader=train_loader, eval_loader=eval_loader, loader_kw=loader_kw, img_size=img_size,
              train_size=train_size, loss_fn=loss_fn, ckpts=ckpts, state=state, lr=lr, resolved=resolved,
              resume_ckpt=resume_ckpt, resume_rng=resume_rng, last_ckpt=resume_ckpt,
              extra_loss_name=extra_loss_name, columns=summary_columns(extra_loss_name),
              bad_step=torch.full((), -1, dtype=torch.int64, device=accelerator.device))
    if accelerator.is_main_process:
        run.rows = read_summary(run_dir / "summary.csv", state.epoch)
    if log_with:
        accelerator.project_configuration.set_directories(str(run_dir))  # trackers write inside the run
        accelerator.init_trackers(run_dir.name, config={k: v for k, v in resolved.items()
                                                        if isinstance(v, (int, float, str, bool))},
                                  init_kwargs=tracker_init_kwargs(log_with, run_dir))
    return run


def _seed_rank(seed: int) -> None:
    import random

    import numpy as np

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (timm's Mixup and mixkit's methods draw from it)
