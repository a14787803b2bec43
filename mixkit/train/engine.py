"""The training loop on Accelerate, in timm train.py's pieces: set-up (``setup.py``), ``train_one_epoch``,
evaluation (``evaluate.py``) and the end of an epoch; one process, several processes or several nodes.

Written here: the loop, exact resume (loader epoch and position, RNG states at the epoch start, the
``TrainState`` of ``state.py``), the NaN guard, the mixing method's optional parts (their gradients
averaged across processes, their own EMA and weights files) and the run directory.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import time
from typing import Any

import torch

from ..mix import MixupBase
from ..mix.parts import part_parameters, sync_part_gradients
from .best import BEST_WEIGHTS_FILE, improves
from .checkpoint import CheckpointError, get_rng_state, set_rng_state
from .data import build_loaders, eval_split_name, progressive_size
from .evaluate import evaluate
from .export import CONFIG_FILE, mixkit_revision, weights_metadata, write_timm_config
from .progress import EpochProgress
from .setup import Run, build_mixup, method_state, setup, validate_args
from .summary import write_summary

__all__ = ["CheckpointError", "NonFiniteLossError", "build_mixup", "end_epoch", "evaluate", "train",
           "train_one_epoch", "validate_args", "weights_digest"]

# Test hook: make the loss NaN at this global step (batch count from the start of training).
INJECT_NAN_ENV = "MIXKIT_TRAIN_INJECT_NAN_STEP"


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


def check_finite(run: Run, step: int) -> None:
    """Raises NonFiniteLossError on every rank together when any rank saw a non-finite loss (one host sync)."""
    worst = run.bad_step
    if run.world > 1:  # every rank stops together (a rank that raised alone would hang the others)
        worst = run.bad_step.clone()
        torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
    at = int(worst.item())
    if at >= 0:
        e, b = divmod(at, run.n_batches)
        raise NonFiniteLossError(
            f"non-finite loss (NaN/Inf) at step {at} (epoch {e}, batch {b}): training stopped without saving; "
            f"the last good checkpoint is {run.last_ckpt or 'none (no checkpoint was written yet)'}. Lower --lr, "
            "set --clip-grad, or use --amp-dtype bfloat16, then --resume from that checkpoint.")


def save_checkpoint(run: Run, epoch: int, batch: int) -> None:
    """The checkpoint that continues at (epoch, batch), after the NaN check; every rank calls this."""
    check_finite(run, epoch * run.n_batches + batch)
    state = run.state
    state.epoch, state.batch, state.mixup = epoch, batch, method_state(run.mixup_fn)
    train_state = state.to_checkpoint(
        # For checks across ranks: DDP keeps the weights equal, the loaders keep the shards disjoint.
        weights_sha256=weights_digest(run.unwrapped), params_sha256=weights_digest(run.unwrapped, params_only=True),
        parts_sha256={name: weights_digest(part) for name, part in run.parts.items()},
        train_shard=torch.as_tensor(getattr(run.train_loader, "indices", []), dtype=torch.int64))
    best = run.run_dir / BEST_WEIGHTS_FILE
    run.last_ckpt = run.ckpts.save(epoch=epoch, batch=batch, train_state=train_state,
                                   meta={"num_updates": state.num_updates, "sched_kwargs": run.sched_kwargs},
                                   files={BEST_WEIGHTS_FILE: best} if state.best is not None else None)


def _optimizer_update(run: Run) -> None:
    from timm.utils import dispatch_clip_grad

    args, accelerator = run.args, run.accelerator
    sync_part_gradients(run.parts)  # before unscaling and clipping, so every rank steps the same parts
    if args.clip_grad is not None:
        accelerator.unscale_gradients()
        dispatch_clip_grad(run.model.parameters(), value=args.clip_grad, mode=args.clip_mode)
        if run.parts:
            dispatch_clip_grad(part_parameters(run.parts), value=args.clip_grad, mode=args.clip_mode)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.state.num_updates += 1
    if run.model_ema is not None:
        run.model_ema.update(run.unwrapped, step=run.state.num_updates)
        for name, ema in run.part_emas.items():
            ema.update(run.parts[name], step=run.state.num_updates)
    run.scheduler.step_update(num_updates=run.state.num_updates)


def train_one_epoch(run: Run, epoch: int) -> float:
    """Trains one epoch (the rest of it, when resuming inside it); returns the mean training loss."""
    args, accelerator, state, model, mixup_fn = run.args, run.accelerator, run.state, run.model, run.mixup_fn
    if mixup_fn is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
        mixup_fn.mixup_enabled = False
    size = progressive_size(epoch, args.prog_res, run.img_size)
    if size != run.train_size:  # FFCV-style progressive resizing: a loader for the new side, same shards
        run.train_size = size
        run.train_loader, _ = build_loaders(args, run.spec, img_size=size, with_eval=False, **run.loader_kw)
        accelerator.print(f"epoch {epoch}: training at {size} px")
    resuming = run.resume_rng is not None and epoch == state.epoch
    if resuming:
        set_rng_state(state.epoch_rng)  # replays the loader's shuffle and worker seeds of this epoch
    else:
        state.epoch_rng = get_rng_state()
    first = state.batch if resuming else 0
    if first == 0:  # a resumed partial epoch keeps the loss of its batches before the checkpoint
        state.reset_epoch_loss()
    n_batches, accum, world = run.n_batches, args.grad_accum_steps, run.world
    run.train_loader.set_epoch(epoch)
    it = iter(run.train_loader)
    for _ in range(first):  # replays the skipped batches: the only way to reproduce workers' RNG streams
        next(it)
    if resuming:
        set_rng_state(run.resume_rng)
        run.resume_rng = None
    model.train()
    show_bar = accelerator.is_main_process and not args.no_progress
    bar = EpochProgress(n_batches, epoch=epoch, start=first, enabled=show_bar, world_size=world)
    inject_nan = int(os.environ.get(INJECT_NAN_ENV, "-1"))
    log_interval = max(1, args.log_interval)
    check_every = 1 if accelerator.device.type == "cpu" else log_interval
    last_accum = n_batches % accum
    last_to_accum = n_batches - last_accum
    # Methods with a saliency pass run it under the training autocast (mixkit.mix.saliency).
    mix_context = accelerator.autocast if getattr(mixup_fn, "uses_model_gradient", False) else contextlib.nullcontext
    extra_loss = mixup_fn.extra_loss if isinstance(mixup_fn, MixupBase) else (lambda: None)
    since_ckpt = 0
    for batch_idx in range(first, n_batches):
        x, y = next(it)
        bar.wait_done()
        step = epoch * n_batches + batch_idx
        need_update = batch_idx == n_batches - 1 or (batch_idx + 1) % accum == 0
        div = last_accum if (batch_idx >= last_to_accum and last_accum) else accum
        if mixup_fn is not None:
            with mix_context():
                x, y = mixup_fn(x, y)  # right before the forward: feature methods arm their hook here
        sync = contextlib.nullcontext() if need_update else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                loss = run.loss_fn(model(x), y)
                extra = extra_loss()
                if extra is not None:
                    loss = loss + extra
            if step == inject_nan:
                loss = loss * float("nan")
            accelerator.backward(loss / div if div > 1 else loss)
        detached = loss.detach()
        run.bad_step.copy_(torch.where((run.bad_step < 0) & ~torch.isfinite(detached), step, run.bad_step))
        state.loss_sum += detached.double() * len(x)
        if extra is not None:
            state.extra_sum += extra.detach().double() * len(x)
            state.extra_count += len(x)
        state.loss_count += len(x)
        if need_update:
            _optimizer_update(run)
        bar.step_done(len(x))
        run.images_seen += len(x) * world
        if (batch_idx + 1) % check_every == 0:
            check_finite(run, step)
        if show_bar and ((batch_idx + 1) % log_interval == 0 or batch_idx == n_batches - 1):
            shown = {"loss": float((state.loss_sum / max(state.loss_count, 1)).item())}
            if run.extra_loss_name:
                shown[run.extra_loss_name] = float((state.extra_sum / max(state.extra_count, 1)).item())
            bar.show(lr=run.optimizer.param_groups[0]["lr"], **shown)
        if accelerator.trackers and (batch_idx + 1) % log_interval == 0:
            # Per-step points for Accelerate's trackers: the epoch's running mean loss so far, the lr, and the
            # throughput of the last --log-interval batches (images/s of all processes, data loading included).
            accelerator.log({"train/loss": float((state.loss_sum / max(state.loss_count, 1)).item()),
                             "train/lr": run.optimizer.param_groups[0]["lr"],
                             "train/images_per_s": bar.interval_images_per_s()}, step=state.num_updates)
        since_ckpt += 1
        if (args.checkpoint_steps and need_update and since_ckpt >= args.checkpoint_steps
                and batch_idx + 1 < n_batches):
            save_checkpoint(run, epoch, batch_idx + 1)
            since_ckpt = 0
    bar.close()
    check_finite(run, epoch * n_batches + n_batches - 1)
    return _epoch_mean(run, state.loss_sum, state.loss_count)


def _epoch_mean(run: Run, total: torch.Tensor, count: int, *, empty: float | None = 0.0) -> float | None:
    """The mean over every process: sums and counts reduced (a process's count may differ from another's);
    ``empty`` when no process counted anything."""
    both = torch.stack([total.double(), torch.tensor(float(count), dtype=torch.float64, device=total.device)])
    total, count = run.accelerator.reduce(both, reduction="sum").tolist()
    return total / count if count else empty


def scored_weights(run: Run) -> str:
    """Which weights a run's evaluation scores: ``ema`` with ``--model-ema`` (timm's rule), else ``raw``. The same
    rule everywhere: the epoch lines, summary.json, model_best.safetensors, and mixkit-eval's default."""
    return "ema" if run.model_ema is not None else "raw"


def evaluate_epoch(run: Run) -> dict[str, Any]:
    """The evaluation of the epoch's weights: the EMA's when there is one, as timm does (the raw weights'
    top-1 is kept beside it as ``raw_top1``); ``weights`` says which were scored."""
    from timm.utils import distribute_bn

    args = run.args
    if args.dist_bn in ("broadcast", "reduce") and run.world > 1 and not args.sync_bn:  # SyncBN: equal already
        # timm's --dist-bn: make BatchNorm statistics equal across ranks before evaluating and saving.
        distribute_bn(run.model, run.world, reduce=args.dist_bn == "reduce")
    if run.eval_loader is None:
        return {}
    metrics = {**evaluate(run.model, run.eval_loader, run.accelerator, hflip_tta=args.eval_hflip_tta),
               "weights": "raw"}
    if run.model_ema is not None:
        raw_top1 = metrics["top1"]
        metrics = {**evaluate(run.model_ema.module, run.eval_loader, run.accelerator, hflip_tta=args.eval_hflip_tta),
                   "weights": "ema", "raw_top1": raw_top1}
    return metrics


def update_best(run: Run, epoch: int, eval_metrics: dict[str, Any]) -> bool:
    """Keeps the epoch's evaluated weights as model_best.safetensors when they beat the best by --eval-metric."""
    from ..rundir import save_model_safetensors

    metric = run.args.eval_metric
    value = eval_metrics.get(metric)
    if not improves(metric, value, run.state.best):
        return False
    weights = eval_metrics["weights"]
    run.state.best = {"metric": metric, "value": float(value), "epoch": epoch, "weights": weights}
    if run.accelerator.is_main_process:
        module = run.model_ema.module if weights == "ema" else run.unwrapped
        save_model_safetensors(module, run.run_dir / BEST_WEIGHTS_FILE,
                               metadata=weights_metadata(run.args, weights=weights, epoch=epoch,
                                                         eval_metric=metric, eval_value=float(value)))
    return True


def end_epoch(run: Run, epoch: int, train_loss: float, eval_metrics: dict[str, Any]) -> None:
    """The schedule's epoch step, the summary row, the log line, and the epoch-end checkpoint."""
    args, accelerator = run.args, run.accelerator
    lrs = [g["lr"] for g in run.optimizer.param_groups]
    run.scheduler.step(epoch + 1, eval_metrics.get(args.eval_metric, eval_metrics.get("top1")))
    row = {"epoch": epoch, "train_loss": train_loss, "eval_loss": eval_metrics.get("loss"),
           "eval_top1": eval_metrics.get("top1"), "eval_top5": eval_metrics.get("top5"), "lr": sum(lrs) / len(lrs)}
    line = f"epoch {epoch}: train_loss {train_loss:.4f}"
    if run.extra_loss_name:
        # None (an empty cell) for an epoch whose steps all left the term out, not a misleading 0.
        extra = row[run.extra_loss_name] = _epoch_mean(run, run.state.extra_sum, run.state.extra_count, empty=None)
        line += f" {run.extra_loss_name} {'-' if extra is None else f'{extra:.4f}'}"
    if eval_metrics:
        row["eval_weights"] = eval_metrics["weights"]
        if "raw_top1" in eval_metrics:
            row["eval_top1_raw"] = eval_metrics["raw_top1"]
        scored = ("EMA weights; raw weights top1 " f"{eval_metrics['raw_top1']:.2f}"
                  if eval_metrics["weights"] == "ema" else "raw weights")
        line += (f" eval_loss {eval_metrics['loss']:.4f} top1 {eval_metrics['top1']:.2f} "
                 f"top5 {eval_metrics['top5']:.2f} ({eval_metrics['samples']} samples, {scored})")
        if update_best(run, epoch, eval_metrics):
            line += f" best {args.eval_metric}"
    accelerator.print(line)
    if accelerator.is_main_process:
        run.rows.append(row)
        write_summary(run.run_dir, run.rows, {"run_dir": str(run.run_dir), "world_size": run.world,
                                              "complete": False}, run.columns)
    # Accelerate's trackers (main process only, inside log()); a no-op without --log-with.
    accelerator.log({f"epoch/{k}": v for k, v in row.items() if k != "epoch" and v is not None}, step=run.state.num_updates)
    save_checkpoint(run, epoch + 1, 0)


def finish(run: Run, elapsed: float, cpu_seconds: float, eval_metrics: dict[str, Any]) -> dict[str, Any]:
    """The final weights (the model's, the EMA's, the method's parts beside them) and the summary."""
    from ..rundir import save_model_safetensors

    args, accelerator = run.args, run.accelerator
    summary = {"run_dir": str(run.run_dir), "world_size": run.world, "complete": True,
               "epochs_trained": run.num_epochs, "num_updates": run.state.num_updates,
               "eval_samples": eval_metrics.get("samples"), "final": run.rows[-1] if run.rows else None,
               # The split the numbers are on: a built-in dataset's test split, else the --val-split folder.
               "eval_split": eval_split_name(args.dataset, args.val_split),
               "train_seconds": elapsed, "images_per_second": run.images_seen / elapsed if elapsed > 0 else None,
               "process_cpu_seconds": cpu_seconds, "mixed_precision": accelerator.mixed_precision,
               "global_batch_size": args.batch_size * run.world * args.grad_accum_steps}
    if run.eval_loader is not None:
        # One rule for every number of the run: the EMA's weights when it keeps one (timm's), else the raw ones.
        summary["eval_weights"] = scored_weights(run)
        summary["best"] = run.state.best and {**run.state.best, "file": BEST_WEIGHTS_FILE}
    if accelerator.is_main_process:
        def meta(weights: str) -> dict[str, str]:
            return weights_metadata(args, weights=weights, epoch=run.num_epochs - 1)

        save_model_safetensors(run.unwrapped, run.run_dir / "model.safetensors", metadata=meta("raw"))
        if run.model_ema is not None:
            save_model_safetensors(run.model_ema.module, run.run_dir / "model_ema.safetensors", metadata=meta("ema"))
        for name, part in run.parts.items():  # beside the classifier, never inside its state dict
            save_model_safetensors(part, run.run_dir / f"{name}.safetensors", metadata=meta("raw"))
            if name in run.part_emas:
                save_model_safetensors(run.part_emas[name].module, run.run_dir / f"{name}_ema.safetensors",
                                       metadata=meta("ema"))
        r = run.resolved
        if not getattr(run.unwrapped, "pretrained_cfg", None):
            # A model registered with timm but not built by its build_model_with_cfg has no pretrained_cfg for
            # timm's config.json; the weights are written all the same.
            accelerator.print(f"{CONFIG_FILE} not written: {args.model} has no timm pretrained_cfg (not built by "
                              "timm's build_model_with_cfg); load model.safetensors with mixkit.rundir.create_model_from_run")
        else:  # timm's config.json of model.safetensors: timm.create_model("local-dir:<run>", pretrained=True).
            write_timm_config(run.unwrapped, run.run_dir / CONFIG_FILE, in_chans=r["in_chans"],
                              img_size=r["img_size"],
                              model_args={**r["model_kwargs"], "num_classes": r["num_classes"],
                                          "in_chans": r["in_chans"], **({"global_pool": args.gp} if args.gp else {})},
                              mean=r["mean"], std=r["std"], crop_pct=r["crop_pct"],
                              interpolation=args.interpolation or "bilinear", label_names=r["classes"],
                              extra={"mixkit": {"method": str(args.mixup), "revision": mixkit_revision()}})
        write_summary(run.run_dir, run.rows, {k: v for k, v in summary.items() if k != "final"}, run.columns)
    # train() calls end_training() (trackers closed, process group destroyed) after this barrier.
    accelerator.wait_for_everyone()
    return summary


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Runs ``mixkit-train`` with parsed arguments; returns the summary (also in summary.json).

    Raises:
        ValueError, TypeError, FileNotFoundError: Bad arguments or data, before training starts.
        NonFiniteLossError: The loss became NaN/Inf; the last checkpoint is left as it was.
    """
    run = setup(args)
    try:
        eval_metrics: dict[str, Any] = {}
        t_start, cpu_start = time.perf_counter(), time.process_time()
        first_epoch = run.state.epoch
        for epoch in range(first_epoch, run.num_epochs):
            train_loss = train_one_epoch(run, epoch)
            eval_metrics = evaluate_epoch(run)
            end_epoch(run, epoch, train_loss, eval_metrics)
        if first_epoch >= run.num_epochs:  # not "no metrics": a run without an evaluation split has none
            # --resume of a finished run: nothing to train; its final weights are evaluated once more.
            run.accelerator.print(f"the run had already finished its {run.num_epochs} epochs: evaluating its weights")
            eval_metrics = evaluate_epoch(run)
        summary = finish(run, time.perf_counter() - t_start, time.process_time() - cpu_start, eval_metrics)
    finally:
        if run.mixup_fn is not None and hasattr(run.mixup_fn, "remove"):
            run.mixup_fn.remove()
    run.accelerator.end_training()
    return summary
