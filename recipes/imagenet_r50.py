#!/usr/bin/env python3
"""ResNet-50 on ImageNet with AlignMixup: the authors' setting, or FFCV's short schedules.

Default (AlignMixup, Venkataramanan et al., CVPR 2022): timm's resnet50, AlignMixup with alpha 2, SGD with
Nesterov momentum 0.9 (timm's 'sgd'), lr 0.1 per 256 images of global batch (the authors used 1024: e.g.
4 processes x 256), weight decay 1e-4, 300 epochs with the lr x0.1 every 75, no label smoothing, 224 px.

``--schedule ffcv-16|ffcv-24|ffcv-32|ffcv-40|ffcv-56|ffcv-88``: FFCV's ResNet-50 configurations
(libffcv/ffcv-imagenet rn50_configs): SGD momentum 0.9 (not Nesterov), lr 1.7 at 512 images per process on
8 GPUs (linear scaling from there), linear warm-up to the peak at epoch 2 then linear decay to 0 (per
update), weight decay 1e-4 (none on BatchNorm and biases), label smoothing 0.1, progressive resizing from
160 to 192 px over the config's ramp epochs, evaluation at 256 px (crop 224/256) with horizontal-flip
test-time augmentation. FFCV's table: 88 epochs, 78.4% top-1 on 8 A100s in 77 min (without mixing). Not
reproduced: FFCV's BlurPool layers.

    accelerate launch recipes/imagenet_r50.py --data-dir /data/imagenet --loader ffcv --amp --amp-dtype bfloat16
    accelerate launch recipes/imagenet_r50.py --data-dir /data/imagenet --schedule ffcv-16 --channels-last
    python recipes/imagenet_r50.py ... --mixup alignmixup_ae   # AlignMixup/AE: the paper's other variant

Every mixkit-train flag overrides the recipe (``--help`` lists them). ``--loader ffcv`` reads
``<data-dir>/train.beton`` and ``<data-dir>/val.beton`` (``mixkit convert``); ``torch`` and ``dali`` read the
ImageFolder.

``--mixup alignmixup_ae`` trains the paper's autoencoder variant with the same AlignMixup settings (alpha 2,
the last feature stage) and a decoder beside the classifier, saved as ``decoder.safetensors``
(docs/mixing.md, AlignMixup/AE); any other registered ``--mixup`` method works the same way.
"""
import sys

from mixkit.train import run_recipe

DEFAULTS = dict(
    model="resnet50",
    mixup="alignmixup",
    mixup_kwargs={"mixup_alpha": 2.0},
    opt="sgd",  # timm's 'sgd' is Nesterov SGD
    momentum=0.9,
    lr=None,
    lr_base=0.1,
    lr_base_size=256,
    lr_base_scale="linear",
    weight_decay=1e-4,
    epochs=300,
    sched="step",
    decay_epochs=75,
    decay_rate=0.1,
    warmup_epochs=0,
    smoothing=0.0,
    batch_size=256,
    img_size=224,
    workers=8,
    val_split="val",
    output="output/imagenet_r50",
)

# (epochs, start_ramp, end_ramp) of FFCV's rn50_configs/rn50_<epochs>_epochs.yaml.
_FFCV_RAMPS = {16: (11, 13), 24: (17, 20), 32: (23, 27), 40: (29, 34), 56: (41, 48), 88: (65, 76)}
FFCV_PEAK_EPOCH = 2


def ffcv_schedule(epochs: int) -> dict:
    start, end = _FFCV_RAMPS[epochs]
    return dict(
        opt="momentum", momentum=0.9, lr=None, lr_base=1.7, lr_base_size=512 * 8, lr_base_scale="linear",
        weight_decay=1e-4, smoothing=0.1, batch_size=512,
        # FFCV's cyclic lr: from 1e-4 * peak at epoch 0 up to the peak at epoch 2, linearly down to 0 at the end,
        # per update: timm's poly schedule with power 1 after a 2-epoch warm-up prefix.
        sched="poly", decay_rate=1.0, warmup_epochs=FFCV_PEAK_EPOCH, warmup_prefix=True,
        warmup_lr=1.7e-4, min_lr=0.0, epochs=epochs - FFCV_PEAK_EPOCH, sched_on_updates=True,
        prog_res=[160, 192, start, end], img_size=192, eval_img_size=256, crop_pct=224 / 256, eval_hflip_tta=True,
    )


SCHEDULES = {f"ffcv-{e}": ffcv_schedule(e) for e in _FFCV_RAMPS}


if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS, description=__doc__, schedules=SCHEDULES,
                        schedule_help="FFCV's ResNet-50 schedule of that many epochs (default: the authors' "
                                      "300-epoch setting)"))
