"""AlexNet on ImageNet with torchvision's reference recipe (V1 weights: 56.52% top-1).

  python -m train --config configs/imagenet_alexnet.py --workdir workdir/alexnet

torchvision: SGD momentum 0.9, lr 0.01 (batch 256), weight decay 1e-4, 90 epochs, lr / 10 every
30 epochs. ImageNet must be
prepared by hand once: see docs/data.md.
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "alexnet"
    config.dataset = "tfds:imagenet2012"
    config.image_size = 224
    config.augment = "random_resized_crop"  # + flips; eval: Resize(256) + CenterCrop(224)
    config.hflip = True
    config.eval_resize = 256
    config.batch_size = 256
    config.num_epochs = 90
    config.learning_rate = 0.01
    config.weight_decay = 1e-4
    config.schedule = "step"
    config.schedule_unit = "epoch"  # the reference trainer steps its scheduler once an epoch
    config.lr_step_epochs = 30
    config.log_every_steps = 100
    return config
