"""ResNet-50 with the recipe of torchvision's IMAGENET1K_V2 weights (80.858% top-1 against
V1's 76.130%), from its reference trainer's command (train/recipes.py):

  torchrun --nproc_per_node=8 train.py --model resnet50 --batch-size 128 --lr 0.5 \
    --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear \
    --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002 \
    --norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0 \
    --train-crop-size 176 --model-ema --val-resize-size 232 --ra-sampler --ra-reps 4

  python -m train --config configs/imagenet_resnet50_v2.py --workdir workdir/r50v2 \
      --config.data_dir=/data/tfds

Global batch 1024 (8 x 128) on any number of devices; train at 176 pixels, evaluate Resize(232)
+ CenterCrop(224); TrivialAugmentWide, RandomErasing 0.1, MixUp 0.2 / CutMix 1.0, label
smoothing 0.1, EMA every 32 steps, repeated augmentation x4, cosine over 600 epochs after 5
epochs of linear warmup, both stepped once an epoch.
"""

from train.recipes import recipe_config


def get_config():
    return recipe_config("resnet50_v2")
