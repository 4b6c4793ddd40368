"""The embedded demo: ResNet-18 trained from scratch on scikit-learn's handwritten digits.

Real 8x8 scans (1,437 train / 360 test), shipped with scikit-learn, upscaled to 32x32: no
download. This is what `make demo` runs:

  python -m train --config configs/digits.py --workdir workdir/demo

Expected: >= 97% test top-1 in under 5 minutes on a 2-core CPU, compilation included (README
has the measured numbers).
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet18"
    config.dataset = "digits"
    config.image_size = 32
    config.augment = "pad_crop"  # random shifts of up to 2 pixels; no flips for digits
    config.crop_padding = 2
    config.batch_size = 64
    config.num_epochs = 8
    config.learning_rate = 0.05
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.warmup_epochs = 1
    config.label_smoothing = 0.0
    config.log_every_steps = 10
    return config
