"""LeNet-5 (LeCun et al. 1998) on scikit-learn's handwritten digits, at the paper's 32x32 input:
the embedded data, no download, about 20 s on a 2-core CPU.

  python -m train --config configs/digits_lenet5.py --workdir workdir/lenet5

Expected: about 97% test top-1 (measured 97.50% in 18 s on a 2-core AMD EPYC, 2026-12-01).
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "lenet5"
    config.dataset = "digits"
    config.image_size = 32
    config.augment = "pad_crop"  # random shifts of up to 2 pixels; no flips for digits
    config.crop_padding = 2
    config.batch_size = 64
    config.num_epochs = 20
    config.learning_rate = 0.05
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.warmup_epochs = 1
    config.label_smoothing = 0.0
    config.log_every_steps = 10
    return config
