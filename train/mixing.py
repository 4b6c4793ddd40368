"""The batch augmentations that run on the device, after normalization: torchvision's
RandomErasing (per image) and MixUp / CutMix (per device's slice of the batch, as torchvision's
reference trainer mixes each GPU's batch in its collate function).

Each is split into a draw (`*_params`, from a JAX key) and a pure application of the drawn
values, so the application can be checked against torchvision's with the same values and the
draws against torchvision's distributions.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class BatchAugment:
    """What train_step does to a normalized batch before the forward pass.

    Attributes:
      random_erase: each image's probability of RandomErasing (0: off).
      mixup_alpha, cutmix_alpha: Beta(alpha, alpha) of MixUp and CutMix (0: that one off); with
        both on, each group picks one with probability 1/2 (torchvision's RandomChoice).
      groups: how many slices of the batch mix on their own (the devices: torchvision mixes
        each GPU's batch of --batch-size images, rolling within it).
    """

    random_erase: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    groups: int = 1

    @property
    def mixes(self) -> bool:
        return bool(self.mixup_alpha or self.cutmix_alpha)


def erasing_params(key, height: int, width: int, probability: float, *, attempts: int = 10,
                   scale=(0.02, 0.33), ratio=(0.3, 3.3)):  # fmt: skip
    """torchvision's RandomErasing.make_params: up to 10 tries of an area fraction uniform in
    `scale` and a log-uniform aspect ratio, the first rectangle that fits strictly inside the
    image, at a uniform position. Returns (top, left, h, w) with h = w = 0 when the image is not
    erased (the coin said no, or no try fit)."""
    coin, area_key, ratio_key, top_key, left_key = jax.random.split(key, 5)
    area = height * width * jax.random.uniform(area_key, (attempts,), minval=scale[0],
                                               maxval=scale[1])  # fmt: skip
    log_ratio = jax.random.uniform(ratio_key, (attempts,), minval=math.log(ratio[0]),
                                   maxval=math.log(ratio[1]))  # fmt: skip
    aspect = jnp.exp(log_ratio)
    # Python's round, as torchvision's int(round(...)): halves to even, as jnp.round.
    hs = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    ws = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (hs < height) & (ws < width)
    first = jnp.argmax(fits)
    erase = fits[first] & (jax.random.uniform(coin) < probability)
    h, w = jnp.where(erase, hs[first], 0), jnp.where(erase, ws[first], 0)
    top = jax.random.randint(top_key, (), 0, height - h + 1)
    left = jax.random.randint(left_key, (), 0, width - w + 1)
    return top, left, h, w


def erase(images, top, left, h, w):
    """torchvision's F.erase with value 0 on each image of an NHWC batch, with its own
    rectangle (top, left, h, w each of shape (N,)): the rectangle becomes 0."""
    rows = jnp.arange(images.shape[1])[None, :, None]
    cols = jnp.arange(images.shape[2])[None, None, :]
    top, left, h, w = (x[:, None, None] for x in (top, left, h, w))
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


def random_erasing(key, images, probability: float):
    """RandomErasing on each image of an NHWC batch with its own draw. The draws are made
    apart from the batch (vmapped over keys alone) so a batch sharded over devices stays so."""
    height, width = images.shape[1:3]
    keys = jax.random.split(key, images.shape[0])
    params = jax.vmap(lambda k: erasing_params(k, height, width, probability))(keys)
    return erase(images, *params)


def cutmix_box(key, height: int, width: int, lam):
    """torchvision's CutMix.make_params given lam: a box of sides sqrt(1 - lam) times the
    image's, centred at a uniform pixel and clipped to the image. Returns (x1, y1, x2, y2)."""
    x_key, y_key = jax.random.split(key)
    r_x = jax.random.randint(x_key, (), 0, width)
    r_y = jax.random.randint(y_key, (), 0, height)
    r = 0.5 * jnp.sqrt(1.0 - lam)
    r_w_half = jnp.floor(r * width).astype(jnp.int32)  # int() of a non-negative number
    r_h_half = jnp.floor(r * height).astype(jnp.int32)
    x1, y1 = jnp.maximum(r_x - r_w_half, 0), jnp.maximum(r_y - r_h_half, 0)
    x2, y2 = jnp.minimum(r_x + r_w_half, width), jnp.minimum(r_y + r_h_half, height)
    return x1, y1, x2, y2


def mixup_weights(lam, height: int, width: int):
    """MixUp's share of each image itself, per pixel (H, W), and of its target: lam."""
    return jnp.full((height, width), lam, jnp.float32), jnp.asarray(lam, jnp.float32)


def cutmix_weights(box, height: int, width: int):
    """CutMix's: 0 inside the box (taken from the predecessor), 1 outside; the target keeps
    the area kept, 1 - box area / image area."""
    x1, y1, x2, y2 = box
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    area = jnp.asarray((x2 - x1) * (y2 - y1), jnp.float32)
    return 1.0 - inside.astype(jnp.float32), (height * width - area) / (height * width)


def mix(images, targets, pixel_weight, target_weight):
    """torchvision's MixUp/CutMix application: each image (NHWC) and target becomes its own
    share plus the rest from its predecessor in the batch (a roll by one), as
    `x.roll(1, 0) * (1 - w) + x * w`. CutMix's 0/1 weights copy pixels exactly."""
    blend = lambda x, w: jnp.roll(x, 1, axis=0) * (1.0 - w) + x * w
    return blend(images, pixel_weight[..., None]), blend(targets, target_weight[..., None])


def choose_mix(key, mixup_alpha: float, cutmix_alpha: float):
    """MixUp or CutMix, each with probability 1/2 when both are on (torchvision's
    RandomChoice): (use CutMix, its alpha)."""
    if mixup_alpha and cutmix_alpha:
        use_cutmix = jax.random.bernoulli(key)
        return use_cutmix, jnp.where(use_cutmix, cutmix_alpha, mixup_alpha)
    return jnp.asarray(bool(cutmix_alpha)), mixup_alpha or cutmix_alpha


def mix_params(key, height: int, width: int, mixup_alpha: float, cutmix_alpha: float):
    """One batch's draw: MixUp or CutMix (choose_mix), lam ~ Beta(alpha, alpha) and CutMix's
    box. Returns the (pixel, target) weights of mix()."""
    choice_key, lam_key, box_key = jax.random.split(key, 3)
    use_cutmix, alpha = choose_mix(choice_key, mixup_alpha, cutmix_alpha)
    lam = jax.random.beta(lam_key, alpha, alpha)
    box = cutmix_box(box_key, height, width, lam)
    mixup_w, cutmix_w = mixup_weights(lam, height, width), cutmix_weights(box, height, width)
    return jax.tree.map(lambda a, b: jnp.where(use_cutmix, b, a), mixup_w, cutmix_w)


def augment_batch(key, images, targets, augment: BatchAugment):
    """Random erasing, then MixUp/CutMix per group, as torchvision's trainer orders them (the
    erasing is the last per-image transform, the mixing the collate function)."""
    erase_key, mix_key = jax.random.split(key)
    if augment.random_erase:
        images = random_erasing(erase_key, images, augment.random_erase)
    if augment.mixes:
        height, width = images.shape[1:3]
        draw = lambda k: mix_params(k, height, width, augment.mixup_alpha, augment.cutmix_alpha)
        weights = jax.vmap(draw)(jax.random.split(mix_key, augment.groups))
        split = lambda x: x.reshape(augment.groups, -1, *x.shape[1:])
        # Images as (rows of a group, G, H, W, C), rolled along the rows; each group's weights,
        # (G, H, W) and (G,), broadcast over them.
        images, targets = mix(split(images).swapaxes(0, 1), split(targets).swapaxes(0, 1), *weights)
        images, targets = (x.swapaxes(0, 1).reshape(-1, *x.shape[2:]) for x in (images, targets))
    return images, targets
