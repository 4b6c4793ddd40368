"""ResNet-18 (torchvision's, unchanged stem) on CIFAR-10 from tensorflow-datasets.

  python -m train --config configs/cifar10_resnet18.py --workdir workdir/cifar10

TFDS downloads and prepares CIFAR-10 (170 MB) on first use into --config.data_dir.
torchvision's ImageNet stem downsamples 32x32 images 4x early, so expect ~93% top-1 after 90
epochs at 64x64 input, not the 95% of CIFAR-specific ResNets.
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet18"
    config.dataset = "tfds:cifar10"
    config.image_size = 64
    config.augment = "pad_crop"  # torchvision's RandomCrop(32, padding=4) at twice the size
    config.hflip = True
    config.batch_size = 128
    config.num_epochs = 90
    config.learning_rate = 0.1
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.warmup_epochs = 2
    config.label_smoothing = 0.1
    return config
