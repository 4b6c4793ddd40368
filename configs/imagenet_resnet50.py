"""ResNet-50 on ImageNet with torchvision's reference recipe (V1 weights: 76.13% top-1).

  python -m train --config configs/imagenet_resnet50.py --workdir workdir/r50 \
      --config.data_dir=/data/tfds

torchvision: SGD momentum 0.9, lr 0.1 x batch/256, weight decay 1e-4, 90 epochs, lr / 10 every
30 epochs. --config.schedule=cosine gives the cosine variant. ImageNet must be
prepared by hand once: see docs/data.md.
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet50"
    config.dataset = "tfds:imagenet2012"
    config.image_size = 224
    config.augment = "random_resized_crop"  # + flips; eval: Resize(256) + CenterCrop(224)
    config.hflip = True
    config.eval_resize = 256
    config.batch_size = 1024
    config.eval_batch_size = 1024
    config.num_epochs = 90
    config.learning_rate = 0.1 * config.batch_size / 256
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.schedule = "step"
    config.schedule_unit = "epoch"  # the reference trainer steps its scheduler once an epoch
    config.lr_step_epochs = 30
    config.lr_gamma = 0.1
    config.dtype = "bfloat16"
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config
