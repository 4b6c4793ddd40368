"""The transfer-learning recipe every tutorial shows, on your own images in torchvision's
ImageFolder layout (DIR/train/CLASS/*.jpg, DIR/val/CLASS/*.jpg): ResNet-50 from converted
ImageNet weights with its backbone frozen (BatchNorm statistics held), `fc` replaced by
Dropout(0.5)-Linear(2048, 256)-ReLU-Dropout(0.3)-Linear(256, N); RandomResizedCrop(224),
flips and ColorJitter(0.2, 0.2) in training, Resize(256) + CenterCrop(224) in evaluation, a
cosine schedule.

With a network, start from torchvision's IMAGENET1K_V2 weights, the file
https://download.pytorch.org/models/resnet50-11ad3fa6.pth:

  python -m train --config configs/transfer_folder.py --workdir workdir/transfer \
      --config.dataset=folder:/data/flowers --config.init_from=resnet50-11ad3fa6.pth

(or `jaxnets convert resnet50 --weights IMAGENET1K_V2 --out workdir/resnet50_v2`, which
downloads it into torch's hub cache, then --config.init_from=workdir/resnet50_v2). Offline, any
torchvision ResNet-50 state_dict file stands in; the tests use a random-init one. To unfreeze
layer4 at a tenth of the head's learning rate: --config.freeze_until=layer4
--config.backbone_lr_scale=0.1. The model then loads into the tutorial's PyTorch module:
`jaxnets convert resnet50 --from-jax workdir/transfer --out tuned.pth`.
"""

from train.config import base_config


def get_config():
    config = base_config()
    config.model = "resnet50"
    config.dataset = "folder:data"  # override with --config.dataset=folder:PATH
    config.init_from = "resnet50-11ad3fa6.pth"  # override with --config.init_from=FILE|DIR
    config.head = "dropout:0.5,linear:256,relu,dropout:0.3,linear:N"
    config.freeze = "backbone"
    config.image_size = 224
    config.augment = "random_resized_crop"
    config.hflip = True
    config.color_jitter = (0.2, 0.2, 0.0)  # ColorJitter(brightness=0.2, contrast=0.2)
    config.eval_resize = 256
    config.batch_size = 32
    config.eval_batch_size = 64
    config.num_epochs = 10
    config.learning_rate = 0.01
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.schedule = "cosine"
    return config
