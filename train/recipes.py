"""The training recipes behind torchvision's ImageNet weights of the 19 architectures, as the
reference trainer's command lines (pytorch/vision references/classification/train.py).

Each becomes a config through train/torchvision_args.py, with the global batch the command's
(`torchrun --nproc_per_node=8`: 8 x --batch-size) on any number of devices. Sources:
- V1 AlexNet/VGG, ResNet, ResNeXt: references/classification/README.md, whose commands run
  8 GPUs. The VGG-BN models "are trained with the default parameters" (no command printed).
  The README adds that the released ResNeXt weights ran on 64 GPUs with --batch-size 16 and
  --lr 0.4: the same lr per image as the command.
- V2 (and resnext101_64x4d V1): pytorch/vision issue #3995 ("New Recipe", "New Recipe + FixRes
  mitigations"), PR #4964 (wide_resnet101_2), PR #5935 (resnext101_64x4d), PR #5201
  (resnet50: the FixRes recipe with --ra-sampler --ra-reps 4).
- Wide ResNet V1: torchvision documents no reference-trainer command (PR #912: SGD with
  cosine warm restarts for 256 epochs in fp16, outside train.py); these entries run the ResNet
  family's V1 command, the nearest one the trainer has.
The released V2 checkpoints were picked by epoch and EMA (PR #5935: epoch 455 of 600); a run
of the command ends at its last epoch.
"""

from __future__ import annotations

import dataclasses

V1_VGG = "torchrun --nproc_per_node=8 train.py --model {} --lr 1e-2"
V1_DEFAULT = "torchrun --nproc_per_node=8 train.py --model {}"
V1_RESNEXT = "torchrun --nproc_per_node=8 train.py --model {} --epochs 100"
V2_NEW_RECIPE = (
    "torchrun --nproc_per_node=8 train.py --model {} --batch-size 128 --lr 0.5 "
    "--lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear "
    "--auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002 "
    "--norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0 "
    "--model-ema --val-resize-size 232"
)
V2_FIXRES = V2_NEW_RECIPE + " --train-crop-size 176"
V2_FIXRES_RA = V2_FIXRES + " --ra-sampler --ra-reps 4"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One weight set's recipe: the architecture, torchvision's weights tag and the command."""

    arch: str
    tag: str
    command: str


def _recipes() -> dict[str, Recipe]:
    v1 = {arch: V1_VGG for arch in ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19")}
    v1 |= {f"{arch}_bn": V1_DEFAULT for arch in ("vgg11", "vgg13", "vgg16", "vgg19")}
    v1 |= {f"resnet{depth}": V1_DEFAULT for depth in (18, 34, 50, 101, 152)}
    v1 |= {"resnext50_32x4d": V1_RESNEXT, "resnext101_32x8d": V1_RESNEXT}
    v1 |= {"resnext101_64x4d": V2_FIXRES_RA}  # its only weights, trained with the V2 recipe
    v1 |= {"wide_resnet50_2": V1_DEFAULT, "wide_resnet101_2": V1_DEFAULT}
    v2 = {
        "resnet50": V2_FIXRES_RA,
        "resnet101": V2_NEW_RECIPE,
        "resnet152": V2_NEW_RECIPE,
        "resnext50_32x4d": V2_NEW_RECIPE,
        "resnext101_32x8d": V2_FIXRES,
        "wide_resnet50_2": V2_FIXRES,
        "wide_resnet101_2": V2_NEW_RECIPE,
    }
    recipes = {f"{a}_v1": Recipe(a, "IMAGENET1K_V1", c.format(a)) for a, c in v1.items()}
    recipes |= {f"{a}_v2": Recipe(a, "IMAGENET1K_V2", c.format(a)) for a, c in v2.items()}
    return recipes


RECIPES = _recipes()


def recipe_config(name: str):
    """The config of recipe `name` ("resnet50_v2"); ValueError in one line for another name."""
    from train.torchvision_args import config_from_command

    if name not in RECIPES:
        raise ValueError(f"no recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return config_from_command(RECIPES[name].command)
