"""torchvision's recipe of each of its ImageNet weights, from the reference trainer's own
command line (train/recipes.py has the commands and their sources):

  python -m train --config configs/torchvision_recipes.py:resnet101_v2 --workdir workdir/r101 \
      --config.data_dir=/data/tfds

The global batch is the documented one (8 processes x --batch-size) on any number of devices;
ImageNet comes from TFDS (docs/data.md), or --config.dataset=folder:PATH for an image folder.

| recipe | torchvision acc@1 | flags after --model ARCH (8 processes) |
|---|---:|---|
| alexnet_v1 | 56.522 | --lr 1e-2 |
| vgg11_v1 | 69.020 | --lr 1e-2 |
| vgg13_v1 | 69.928 | --lr 1e-2 |
| vgg16_v1 | 71.592 | --lr 1e-2 |
| vgg19_v1 | 72.376 | --lr 1e-2 |
| vgg11_bn_v1 | 70.370 | (defaults) |
| vgg13_bn_v1 | 71.586 | (defaults) |
| vgg16_bn_v1 | 73.360 | (defaults) |
| vgg19_bn_v1 | 74.218 | (defaults) |
| resnet18_v1 | 69.758 | (defaults) |
| resnet34_v1 | 73.314 | (defaults) |
| resnet50_v1 | 76.130 | (defaults) |
| resnet101_v1 | 77.374 | (defaults) |
| resnet152_v1 | 78.312 | (defaults) |
| resnext50_32x4d_v1 | 77.618 | --epochs 100 |
| resnext101_32x8d_v1 | 79.312 | --epochs 100 |
| resnext101_64x4d_v1 | 83.246 | V2 + --train-crop-size 176 --ra-sampler --ra-reps 4 |
| wide_resnet50_2_v1 | 78.468 | (defaults: no train.py command was published) |
| wide_resnet101_2_v1 | 78.848 | (defaults: no train.py command was published) |
| resnet50_v2 | 80.858 | V2 + --train-crop-size 176 --ra-sampler --ra-reps 4 |
| resnet101_v2 | 81.886 | V2 |
| resnet152_v2 | 82.284 | V2 |
| resnext50_32x4d_v2 | 81.198 | V2 |
| resnext101_32x8d_v2 | 82.834 | V2 + --train-crop-size 176 |
| wide_resnet50_2_v2 | 81.602 | V2 + --train-crop-size 176 |
| wide_resnet101_2_v2 | 82.510 | V2 |

V2: --batch-size 128 --lr 0.5 --lr-scheduler cosineannealinglr --lr-warmup-epochs 5
--lr-warmup-method linear --auto-augment ta_wide --epochs 600 --random-erase 0.1
--weight-decay 0.00002 --norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2
--cutmix-alpha 1.0 --model-ema --val-resize-size 232
"""

from train.recipes import recipe_config


def get_config(name: str):
    return recipe_config(name)
