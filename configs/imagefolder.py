"""ResNet-18 from scratch on your own images in torchvision's ImageFolder layout
(DIR/train/CLASS/*.jpg and DIR/val/CLASS/*.jpg), with ImageNet-style augmentation.

  python -m train --config configs/imagefolder.py --workdir workdir/folder \
      --config.dataset=folder:/data/flowers

Unreadable files are skipped and listed in the workdir (--config.bad_images=error stops at the
first, naming it). To start from torchvision weights instead, add --config.init_from=FILE.pth.
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet18"
    config.dataset = "folder:data"  # override with --config.dataset=folder:PATH
    config.image_size = 224
    config.augment = "random_resized_crop"
    config.hflip = True
    config.color_jitter = (0.0, 0.0, 0.0)
    config.eval_resize = 256
    config.batch_size = 64
    config.eval_batch_size = 64
    config.num_epochs = 30
    config.learning_rate = 0.1 * config.batch_size / 256
    config.weight_decay = 1e-4
    config.schedule = "cosine"
    config.warmup_epochs = 1
    config.label_smoothing = 0.1
    return config
