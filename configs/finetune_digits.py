"""Fine-tuning converted torchvision weights with a new head, shown on the digits data.

  jaxnets convert resnet18 --weights IMAGENET1K_V1 --out workdir/resnet18_imagenet
  python -m train --config configs/finetune_digits.py --workdir workdir/finetune \
      --config.init_from=workdir/resnet18_imagenet

init_from takes a jaxnets export directory or a torchvision .pth/.safetensors file; a head of
another size is replaced by a freshly initialized one. --config.freeze_backbone=True trains the
head alone (the backbone runs in eval mode: running statistics stay as converted).
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet18"
    config.dataset = "digits"
    config.image_size = 64
    config.batch_size = 64
    config.num_epochs = 4
    config.learning_rate = 0.01
    config.weight_decay = 1e-4
    config.schedule = "cosine"
    config.init_from = ""  # set on the command line
    config.freeze_backbone = False
    return config
