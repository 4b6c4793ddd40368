"""The transfer-learning recipe end to end on the digits: the demo's own trained ResNet-18 as a
frozen backbone (BatchNorm statistics held), its `fc` replaced by an MLP head trained alone.

  make demo     # trains workdir/demo
  python -m train --config configs/finetune_digits.py --workdir workdir/finetune_digits

init_from takes the demo's workdir (its latest checkpoint); a jaxnets export directory or a
torchvision .pth/.safetensors file works the same, a head of another size or spec starting
fresh. The README has the measured accuracy and time (under a minute on a 2-core CPU).
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet18"
    config.dataset = "digits"
    config.image_size = 32
    config.augment = "pad_crop"
    config.crop_padding = 2
    config.init_from = "workdir/demo"
    config.head = "dropout:0.5,linear:256,relu,dropout:0.3,linear:N"
    config.freeze = "backbone"
    config.batch_size = 64
    config.num_epochs = 3
    config.learning_rate = 0.05
    config.weight_decay = 1e-4
    config.schedule = "cosine"
    config.log_every_steps = 10
    return config
