"""``mixkit-train``'s command line: timm train.py's flag names, defaults and meanings, plus mixkit's own.

Precedence, lowest first: the parser defaults (timm's), a recipe's defaults, a ``-c/--config`` YAML file
(as in timm: its keys are argument names with underscores), then the command line.
"""
from __future__ import annotations

import argparse
import ast
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from mixkit.data.imagefolder import DEFAULT_VALIDATE, VALIDATE_HELP, VALIDATE_MODES
from mixkit.mix import list_mixups, mixup_preset
from mixkit.timm_compat import is_mixup_method, mixup_arg

from .best import EVAL_METRICS

__all__ = ["ParseKwargs", "args_to_yaml_dict", "build_parser", "parse_args"]


class ParseKwargs(argparse.Action):
    """``key=value ...`` into a dict; values read as Python literals where they parse, else strings.

    timm's ``timm.utils.ParseKwargs`` behaves the same but dies on a token without ``=``; this one
    names the token (argparse then prints the usage).
    """

    def __call__(self, parser, namespace, values, option_string=None):
        kw = {}
        for token in values:
            if not token:
                continue
            if "=" not in token:
                parser.error(f"{option_string} takes key=value pairs, got {token!r} (e.g. {option_string} "
                             "input_prob=0.5 direction=to_a)")
            key, value = token.split("=", 1)
            try:
                kw[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                kw[key] = value
        setattr(namespace, self.dest, kw)


def _add_data(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Dataset")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="dataset root: an ImageFolder with split folders (train/, val/ or validation/); for "
                        "--loader ffcv, a folder holding <split>.beton files written by `mixkit convert`")
    g.add_argument("--dataset", "-d", default="", metavar="NAME",
                   help="dataset type: '' (ImageFolder under --data-dir, default), 'fashion_mnist' "
                        "(Debian's offline Fashion-MNIST: train split for training, the 10,000-image test "
                        "split for evaluation; --data-dir may name the IDX folder), 'placed_fashion_mnist' "
                        "(its objects at random positions and scales on cluttered 64 x 64 canvases, with "
                        "boxes, for mixkit-eval --localization placed) or 'cub' (CUB-200-2011's layout "
                        "under --data-dir: train_test_split.txt's training images train, its test images "
                        "evaluate)")
    g.add_argument("--train-split", default="train", metavar="NAME",
                   help="training split folder (default: train; 'training' also found)")
    g.add_argument("--val-split", default="validation", metavar="NAME",
                   help="evaluation split folder (default: validation; val, valid, eval, evaluation also found); "
                        "'' skips evaluation")
    g.add_argument("--loader", default="torch", metavar="NAME",
                   help="mixkit.data backend: torch (default), ffcv or dali")
    g.add_argument("--validate", choices=VALIDATE_MODES, default=DEFAULT_VALIDATE, help=VALIDATE_HELP)


def _add_model(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Model")
    g.add_argument("--model", default="resnet50", metavar="MODEL",
                   help="timm model name (mixkit's preact_resnet18_cifar / preact_resnet_tiny_cifar included; "
                        "default: resnet50)")
    g.add_argument("--pretrained", action="store_true", default=False,
                   help="start from timm's pretrained weights (must be in the local cache: nothing is downloaded "
                        "when HF_HUB_OFFLINE=1)")
    g.add_argument("--initial-checkpoint", default="", metavar="PATH",
                   help="initialise the model from this .safetensors or timm checkpoint (weights only)")
    g.add_argument("--resume", default="", metavar="PATH",
                   help="continue a run exactly: a run directory (its latest checkpoint) or one checkpoint "
                        "directory under <run>/checkpoints/")
    g.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="classifier outputs (default: the number of classes in the data)")
    g.add_argument("--gp", default=None, metavar="POOL", help="global pool type (default: the model's)")
    g.add_argument("--img-size", type=int, default=None, metavar="N",
                   help="image side (default: the model's pretrained_cfg; 28 for fashion_mnist)")
    g.add_argument("--in-chans", type=int, default=None, metavar="N",
                   help="input channels (default: 3; 1 for fashion_mnist)")
    g.add_argument("--input-size", default=None, nargs=3, type=int, metavar="N",
                   help="C H W, overrides --in-chans and --img-size (square images only)")
    g.add_argument("--eval-img-size", type=int, default=None, metavar="N",
                   help="evaluation image side (default: --img-size), e.g. 256 for FFCV's ResNet-50 schedules")
    g.add_argument("--eval-hflip-tta", action="store_true", default=False,
                   help="evaluation adds the logits of the horizontally flipped image (FFCV's test-time flip)")
    g.add_argument("--prog-res", type=int, nargs=4, default=None, metavar=("MIN", "MAX", "START", "END"),
                   help="progressive resizing as FFCV: the training side grows linearly from MIN px at epoch START "
                        "to MAX px at epoch END, rounded to a multiple of 32 (default: off)")
    g.add_argument("--crop-pct", default=None, type=float, metavar="PCT",
                   help="evaluation centre-crop fraction (default: the model's)")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="MEAN",
                   help="normalisation mean per channel (default: the model's; the data's for fashion_mnist)")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="STD",
                   help="normalisation std per channel (default: the model's; the data's for fashion_mnist)")
    g.add_argument("--interpolation", default="", metavar="NAME",
                   help="resize interpolation (default: the model's)")
    g.add_argument("-b", "--batch-size", type=int, default=128, metavar="N",
                   help="training batch size per process (default: 128)")
    g.add_argument("-vb", "--validation-batch-size", type=int, default=None, metavar="N",
                   help="evaluation batch size (default: the training batch size)")
    g.add_argument("--channels-last", action="store_true", default=False,
                   help="channels-last memory for the model and the batches")
    g.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs, metavar="KEY=VALUE",
                   help="extra create_model arguments, e.g. base_width=8 (stored in args.yaml)")
    g.add_argument("--drop", type=float, default=0.0, metavar="PCT", help="dropout rate (default: 0)")
    g.add_argument("--drop-path", type=float, default=None, metavar="PCT",
                   help="drop-path rate (default: the model's)")


def _add_optimizer(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Optimizer")
    g.add_argument("--opt", default="sgd", metavar="OPTIMIZER",
                   help="timm optimizer name (create_optimizer_v2: sgd, momentum, adamw, lamb, ...; default: sgd, "
                        "which is Nesterov SGD in timm)")
    g.add_argument("--opt-eps", default=None, type=float, metavar="EPSILON", help="optimizer epsilon")
    g.add_argument("--opt-betas", default=None, type=float, nargs="+", metavar="BETA", help="optimizer betas")
    g.add_argument("--opt-kwargs", nargs="*", default={}, action=ParseKwargs, metavar="KEY=VALUE",
                   help="extra optimizer arguments")
    g.add_argument("--momentum", type=float, default=0.9, metavar="M", help="momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=float, default=2e-5, help="weight decay (default: 2e-5)")
    g.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                   help="clip gradients at this norm or value (default: off)")
    g.add_argument("--clip-mode", default="norm", help="clipping mode: norm, value or agc (default: norm)")
    g.add_argument("--layer-decay", type=float, default=None, help="layer-wise lr decay (default: off)")
    g.add_argument("--grad-accum-steps", type=int, default=1, metavar="N",
                   help="batches accumulated per optimizer step (default: 1)")


def _add_schedule(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Learning-rate schedule")
    g.add_argument("--sched", default="cosine", metavar="SCHEDULER",
                   help="timm scheduler: cosine, tanh, step, multistep, plateau, poly, constant, wsd, rsqrt (default: cosine)")
    g.add_argument("--sched-on-updates", action="store_true", default=False,
                   help="step the schedule every optimizer update instead of every epoch")
    g.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="learning rate (default: --lr-base scaled by the global batch size)")
    g.add_argument("--lr-base", type=float, default=0.1, metavar="LR",
                   help="learning rate per --lr-base-size images of global batch, used when --lr is unset "
                        "(default: 0.1)")
    g.add_argument("--lr-base-size", type=int, default=256, metavar="DIV",
                   help="batch size of --lr-base (default: 256)")
    g.add_argument("--lr-base-scale", default="", metavar="SCALE",
                   help="'linear' or 'sqrt' scaling of --lr-base (default: sqrt for ada*/lamb, linear otherwise)")
    g.add_argument("--lr-noise", type=float, nargs="+", default=None, metavar="pct, pct",
                   help="learning-rate noise on/off epoch fractions")
    g.add_argument("--lr-noise-pct", type=float, default=0.67, help="learning-rate noise limit (default: 0.67)")
    g.add_argument("--lr-noise-std", type=float, default=1.0, help="learning-rate noise std (default: 1.0)")
    g.add_argument("--lr-cycle-mul", type=float, default=1.0, help="cycle length multiplier (default: 1.0)")
    g.add_argument("--lr-cycle-decay", type=float, default=0.5, help="lr decay per cycle (default: 0.5)")
    g.add_argument("--lr-cycle-limit", type=int, default=1, help="cycles (default: 1)")
    g.add_argument("--lr-k-decay", type=float, default=1.0, help="k-decay for cosine/poly (default: 1.0)")
    g.add_argument("--warmup-lr", type=float, default=1e-5, help="warm-up start lr (default: 1e-5)")
    g.add_argument("--min-lr", type=float, default=0.0, help="lower lr bound (default: 0)")
    g.add_argument("--epochs", type=int, default=300, metavar="N", help="epochs to train (default: 300)")
    g.add_argument("--decay-milestones", default=[90, 180, 270], type=int, nargs="+", metavar="MILESTONES",
                   help="multistep decay epochs (default: 90 180 270)")
    g.add_argument("--decay-epochs", type=float, default=90, metavar="N",
                   help="step schedule: decay every N epochs (default: 90)")
    g.add_argument("--warmup-epochs", type=int, default=5, metavar="N", help="warm-up epochs (default: 5)")
    g.add_argument("--warmup-prefix", action="store_true", default=False,
                   help="warm-up epochs come before the schedule instead of inside it")
    g.add_argument("--cooldown-epochs", type=int, default=0, metavar="N",
                   help="epochs at min-lr after the schedule (default: 0)")
    g.add_argument("--patience-epochs", type=int, default=10, metavar="N", help="plateau patience (default: 10)")
    g.add_argument("--decay-rate", "--dr", type=float, default=0.1, metavar="RATE",
                   help="lr decay factor (default: 0.1)")


def _add_augmentation(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Augmentation and mixing")
    g.add_argument("--scale", type=float, nargs="+", default=[0.08, 1.0], metavar="PCT",
                   help="RandomResizedCrop area range (default: 0.08 1.0)")
    g.add_argument("--ratio", type=float, nargs="+", default=[3.0 / 4.0, 4.0 / 3.0], metavar="RATIO",
                   help="RandomResizedCrop aspect range (default: 0.75 1.33)")
    g.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability (default: 0.5)")
    g.add_argument("--smoothing", type=float, default=None,
                   help="label smoothing (default: the --mixup method's preset value where it has one, 0 for "
                        "alignmixup_paper, else 0.1 as in timm)")
    g.add_argument("--mixup", type=mixup_arg, default=0.0, metavar="ALPHA|METHOD",
                   help="timm's mixup alpha (mixing on when > 0; timm's Mixup), or a mixkit method name "
                        f"({', '.join(list_mixups())}) built with mixkit.create_mixup; default: 0")
    g.add_argument("--mixup-kwargs", nargs="*", default={}, action=ParseKwargs, metavar="KEY=VALUE",
                   help="settings of the --mixup method, e.g. input_prob=0.5 direction=to_a mixup_alpha=2.0 (docs/mixing.md lists each method's)")
    g.add_argument("--cutmix", type=float, default=0.0,
                   help="cutmix alpha, on when > 0 (default: 0; must stay 0 with the methods that do not cut, "
                        "e.g. manifold and alignmixup)")
    g.add_argument("--cutmix-minmax", type=float, nargs="+", default=None,
                   help="cutmix min/max box ratio; overrides the alpha (default: off)")
    g.add_argument("--mixup-prob", type=float, default=1.0,
                   help="probability of mixing a batch (default: 1.0)")
    g.add_argument("--mixup-switch-prob", type=float, default=0.5,
                   help="probability of cutmix when both mixup and cutmix are on (default: 0.5)")
    g.add_argument("--mixup-mode", default="batch",
                   help="how lambda is drawn: batch, pair or elem (default: batch)")
    g.add_argument("--mixup-off-epoch", default=0, type=int, metavar="N",
                   help="turn mixing off from this epoch on; 0: never (default: 0)")


def _add_timm_augment(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("timm augmentation (timm's create_transform; --loader torch on an ImageFolder: "
                                  "the other backends refuse them)")
    g.add_argument("--aa", default=None, metavar="NAME",
                   help="timm's AutoAugment / RandAugment / AugMix policy string, e.g. rand-m9-mstd0.5-inc1, "
                        "original, v0, augmix-m5-w4-d2 (default: off)")
    g.add_argument("--color-jitter", type=float, default=0.0, metavar="PCT",
                   help="colour jitter factor (default: 0, off; timm's train.py defaults to 0.4, mixkit keeps it off "
                        "so that every backend applies the same augmentation unless asked)")
    g.add_argument("--color-jitter-prob", type=float, default=None, metavar="PCT",
                   help="probability of applying the colour jitter (default: always, when on)")
    g.add_argument("--grayscale-prob", type=float, default=None, metavar="PCT",
                   help="probability of a random grayscale conversion (default: off)")
    g.add_argument("--gaussian-blur-prob", type=float, default=None, metavar="PCT",
                   help="probability of a Gaussian blur (default: off)")
    g.add_argument("--reprob", type=float, default=0.0, metavar="PCT",
                   help="random-erasing probability (default: 0, off)")
    g.add_argument("--remode", default="pixel",
                   help="random-erasing fill: const, rand or pixel (default: pixel, as timm's train.py)")
    g.add_argument("--recount", type=int, default=1, help="random-erasing regions per image (default: 1)")
    g.add_argument("--aug-splits", type=int, default=0, metavar="N",
                   help="timm's augmentation splits: 0 (off) or N >= 2, each image seen clean and N-1 times augmented "
                        "(timm's AugMixDataset; with --aa augmix-m5-w4-d2 and --jsd-loss timm's AugMix recipe); the "
                        "batch holds N * -b images. Not with mixing (--mixup/--cutmix: timm's train.py refuses the "
                        "pair too); --loader torch on an ImageFolder only (default: 0)")
    g.add_argument("--resplit", action="store_true", default=False,
                   help="random erasing (--reprob) spares the first, clean split (needs --aug-splits)")


def _add_loss(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Loss (timm's train.py rules)")
    g.add_argument("--bce-loss", action="store_true", default=False,
                   help="timm's BinaryCrossEntropy instead of cross-entropy, on the mixed soft targets when mixing "
                        "is on (label smoothing then comes from the mixing, as in timm)")
    g.add_argument("--bce-sum", action="store_true", default=False, help="BCE sums over classes")
    g.add_argument("--bce-target-thresh", type=float, default=None,
                   help="binarise the soft BCE targets at this threshold (default: off)")
    g.add_argument("--bce-pos-weight", type=float, default=None, help="BCE weight of the positive class")
    g.add_argument("--jsd-loss", action="store_true", default=False,
                   help="timm's JsdCrossEntropy: cross-entropy on the clean split plus the Jensen-Shannon consistency "
                        "of all --aug-splits views (smoothing: --smoothing); needs --aug-splits >= 2, no mixing, "
                        "not with --bce-loss")


def _add_model_regularization(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Model regularization and memory")
    g.add_argument("--drop-block", type=float, default=None, metavar="PCT",
                   help="DropBlock rate, passed to timm.create_model (default: the model's)")
    g.add_argument("--grad-checkpointing", action="store_true", default=False,
                   help="model.set_grad_checkpointing(): recompute blocks in backward to save memory; refused with "
                        "feature-space mixing (timm's checkpointing bypasses the hooked stage modules)")
    g.add_argument("--split-bn", action="store_true", default=False,
                   help="timm's convert_splitbn_model: BatchNorm statistics of their own for each augmented split; "
                        "the clean split's are the model's (evaluation and the exported weights use them); needs "
                        "--aug-splits >= 2, not with --sync-bn")
    g.add_argument("--sync-bn", action="store_true", default=False,
                   help="SyncBatchNorm across processes (timm's convert_sync_batchnorm; --dist-bn is then not "
                        "needed and skipped); with one process there is nothing to synchronise and BatchNorm is kept")


def _add_ema(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Model EMA")
    g.add_argument("--model-ema", action="store_true", default=False,
                   help="keep an exponential moving average of the weights (timm's ModelEmaV3): every number of "
                        "the run is then the EMA's (as timm; the epoch lines say so), model_best.safetensors holds it, "
                        "and mixkit-eval RUN scores model_ema.safetensors unless --raw")
    g.add_argument("--model-ema-decay", type=float, default=0.9998, help="EMA decay (default: 0.9998)")
    g.add_argument("--model-ema-warmup", action="store_true", default=False,
                   help="ramp the EMA decay up from 0 (timm's ModelEmaV3 use_warmup): without it a short run's EMA "
                        "keeps decay^updates of the random start (0.9998^4400 ~ 41%%)")


def _add_misc(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Run control")
    g.add_argument("--seed", type=int, default=42, metavar="S", help="random seed (default: 42)")
    g.add_argument("--log-interval", type=int, default=50, metavar="N",
                   help="batches between progress-bar metric updates and NaN checks (default: 50)")
    g.add_argument("--checkpoint-steps", type=int, default=0, metavar="N",
                   help="also save a checkpoint every N training batches; 0: at epoch ends only (default: 0)")
    g.add_argument("--checkpoint-hist", type=int, default=10, metavar="N",
                   help="checkpoints kept, newest first (default: 10)")
    g.add_argument("-j", "--workers", type=int, default=4, metavar="N",
                   help="loader worker processes/threads per process (default: 4)")
    g.add_argument("--amp", action="store_true", default=False,
                   help="mixed precision through Accelerate (dtype from --amp-dtype); `accelerate launch "
                        "--mixed_precision` wins when it is set: args.yaml's mixed_precision records what ran")
    g.add_argument("--amp-dtype", default="float16", help="float16 or bfloat16 (default: float16)")
    g.add_argument("--output", default="", metavar="PATH", help="parent of run directories (default: ./output/train)")
    g.add_argument("--experiment", default="", metavar="NAME",
                   help="run directory name (default: <date-time>-<model>-<img size>, as timm)")
    g.add_argument("--dist-bn", default="reduce",
                   help="BatchNorm statistics across processes at each epoch end: reduce (average), broadcast "
                        "(rank 0's) or '' (leave them; default: reduce)")
    g.add_argument("--eval-metric", default="top1", choices=sorted(EVAL_METRICS),
                   help="evaluation metric that picks the best epoch, kept as model_best.safetensors (its metric "
                        "and epoch in summary.json's 'best'), and drives the plateau schedule: top1 or top5 "
                        "(higher is better) or loss (lower is better), as timm's train.py (default: top1)")
    g.add_argument("--torchcompile", nargs="?", type=str, default=None, const="inductor",
                   help="torch.compile the model with this backend (default: off)")
    g.add_argument("--no-progress", action="store_true", default=False,
                   help="no progress bar (one log line per epoch instead)")
    g.add_argument("--cpu", action="store_true", default=False, help="train on the CPU even when CUDA is present")


def _add_logging(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Experiment trackers (Accelerate)")
    g.add_argument("--log-with", default="none", metavar="NAMES",
                   help="Accelerate trackers: tensorboard, wandb, mlflow, all (every installed one) or none, comma "
                        "lists allowed; they write under the run directory; per-epoch metrics and every "
                        "--log-interval steps loss/lr/throughput; wandb runs offline unless WANDB_MODE is set "
                        "(default: none)")
    g.add_argument("--log-wandb", action="store_true", default=False,
                   help="timm's flag: the same as adding wandb to --log-with")


def build_parser(description: str = "Train an image classifier with timm's flags and mixkit's mixing methods "
                 "on Accelerate.") -> argparse.ArgumentParser:
    """The full ``mixkit-train`` parser (``-c/--config`` included, so ``--help`` lists it)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="", metavar="FILE",
                        help="YAML file of argument defaults (keys are flag names with underscores); the "
                             "command line overrides it")
    for add in (_add_data, _add_model, _add_optimizer, _add_schedule, _add_augmentation, _add_timm_augment, _add_loss,
                _add_model_regularization, _add_ema, _add_misc, _add_logging):
        add(parser)
    return parser


def _load_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except FileNotFoundError:
        parser.error(f"config file {path} does not exist")
    except yaml.YAMLError as e:
        parser.error(f"config file {path} is not valid YAML: {e}")
    if not isinstance(cfg, dict):
        parser.error(f"config file {path} must be a mapping of argument names to values")
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(cfg) - known)
    if unknown:
        parser.error(f"config file {path} has keys that are no argument: {', '.join(unknown)} "
                     "(keys are flag names with underscores, e.g. batch_size)")
    actions = {a.dest: a for a in parser._actions}
    for key, value in cfg.items():
        try:
            cfg[key] = _config_value(parser, actions[key], value)
        except argparse.ArgumentError as e:
            parser.error(f"config file {path}: {e} (key {key}: {value!r})")
    return cfg


def _config_value(parser: argparse.ArgumentParser, action: argparse.Action, value: Any) -> Any:
    """A config file's value converted as the command line converts the flag's strings: the same count
    (nargs), type and choices, so a config gets the command line's checks and messages instead of a
    traceback where the value is first used.

    Raises:
        argparse.ArgumentError: The value does not fit the flag (the message is argparse's own).
    """
    def refuse(message: str) -> argparse.ArgumentError:
        return argparse.ArgumentError(action, message)

    if action.nargs == 0:  # store_true: a switch
        if not isinstance(value, bool):
            raise refuse(f"a switch: give true or false, got {type(value).__name__}")
        return value
    if isinstance(action, ParseKwargs):
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return value
        if isinstance(value, str | list) and all(isinstance(t, str) for t in ([value] if isinstance(value, str) else value)):
            namespace = argparse.Namespace()
            action(parser, namespace, value.split() if isinstance(value, str) else value, action.option_strings[-1])
            return getattr(namespace, action.dest)
        raise refuse(f"expected a mapping of names to values (or a list of key=value), got {type(value).__name__}")
    if value is None:
        if action.default is not None:
            raise refuse("needs a value (null given); leave the key out for the default")
        return None
    if isinstance(value, dict):
        raise refuse(f"expected {'one value' if action.nargs in (None, '?') else 'a list of values'}, got a mapping")
    nargs = action.nargs
    if nargs in (None, "?") and isinstance(value, list):
        raise refuse(f"expected one argument, got a list of {len(value)}")
    tokens = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if isinstance(nargs, int) and len(tokens) != nargs:
        raise refuse(f"expected {nargs} arguments, got {len(tokens)}")
    if nargs == "+" and not tokens:
        raise refuse("expected at least one argument")
    # argparse's own conversion of a flag's strings (type, then choices), as parse_args applies it.
    return parser._get_values(action, tokens)


def parse_args(argv: Sequence[str] | None = None, *, defaults: Mapping[str, Any] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parses ``mixkit-train`` arguments.

    Args:
        argv: Arguments (default: sys.argv[1:]).
        defaults: A recipe's defaults; a config file and the command line override them.
        parser: A parser from ``build_parser`` (a recipe's, with its own description).
    """
    parser = parser or build_parser()
    if defaults:
        known = {a.dest for a in parser._actions}
        bad = sorted(set(defaults) - known)
        if bad:
            raise ValueError(f"recipe defaults name unknown arguments: {', '.join(bad)}")
        parser.set_defaults(**defaults)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-c", "--config", default="")
    pre.add_argument("--resume", default=None)
    cfg_args, _ = pre.parse_known_args(argv)
    # --resume RUN alone continues the run as it was: its args.yaml is the defaults, under a config file and
    # the command line (which may change what keeps the run exact: more epochs, another log interval, ...).
    saved = _resumed_run_args(cfg_args.resume or (defaults or {}).get("resume") or "", parser)
    if saved:
        parser.set_defaults(**saved)
    if cfg_args.config:
        parser.set_defaults(**_load_config(cfg_args.config, parser))
    args = parser.parse_args(argv)
    if args.smoothing is None:
        args.smoothing = _default_smoothing(args.mixup)
    if saved:
        _check_resume_is_exact(saved, args)
    return args


# What a resumed run must keep to continue the run it resumes (the checkpoint's weights, optimizer state, data
# order and mixing draws depend on them).
RESUME_FIXED = ("model", "model_kwargs", "num_classes", "in_chans", "batch_size", "grad_accum_steps", "mixup",
                "mixup_kwargs", "cutmix", "seed",
                # The augmentation draws, the loss and the model's stochastic layers (not --grad-checkpointing:
                # it recomputes the same values; not --sync-bn: it follows the number of processes).
                "aa", "color_jitter", "color_jitter_prob", "grayscale_prob", "gaussian_blur_prob", "reprob",
                "remode", "recount", "bce_loss", "bce_sum", "bce_target_thresh", "bce_pos_weight", "drop",
                "drop_path", "drop_block", "aug_splits", "resplit", "jsd_loss", "split_bn")


def _resumed_run_args(resume: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The arguments of the run ``--resume`` names (its args.yaml), as parser defaults; {} when there is
    none to read (setup then says what is missing)."""
    from ..rundir import load_run_args
    from .checkpoint import CheckpointError, find_checkpoint

    if not resume:
        return {}
    try:
        saved = load_run_args(find_checkpoint(resume)[1])
    except (CheckpointError, FileNotFoundError, ValueError):
        return {}
    known = {a.dest for a in parser._actions} - {"resume", "config", "help"}
    saved = {k: v for k, v in saved.items() if k in known}
    if "mixup" in saved:
        saved["mixup"] = mixup_arg(saved["mixup"])
    return saved


def _check_resume_is_exact(saved: Mapping[str, Any], args: argparse.Namespace) -> None:
    def shown(value: Any) -> str:
        return repr(str(value)) if isinstance(value, str) or is_mixup_method(value) else repr(value)

    now = args_to_yaml_dict(args)
    changed = [f"--{k.replace('_', '-')} {shown(saved[k])} -> {shown(now[k])}" for k in RESUME_FIXED
               if k in saved and now.get(k) != saved[k]]
    if changed:
        raise ValueError(f"--resume {args.resume}: these settings differ from the run's args.yaml, so the run could "
                         f"not continue as the run it is: {'; '.join(changed)}. Drop them to continue it, or start "
                         "a new run from its weights (--initial-checkpoint <run>/model.safetensors)")


def _default_smoothing(mixup: float | str) -> float:
    """timm's 0.1, unless the --mixup method's preset sets its own (alignmixup_paper: 0, the authors' loss);
    resolved here so that the training loss and args.yaml see the value the mixing function uses."""
    preset = mixup_preset(str(mixup)) if is_mixup_method(mixup) else {}
    return float(preset.get("label_smoothing", 0.1))


def args_to_yaml_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments as plain YAML types (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v
    return {k: plain(v) for k, v in sorted(vars(args).items())}
