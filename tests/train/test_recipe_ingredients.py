"""The V2 recipe's device-side ingredients against torchvision: RandomErasing, MixUp and CutMix
(train/mixing.py), the EMA rule of the reference trainer (train/steps.py) and its repeated-
augmentation sampler (train/data/sampler.py).

Where the frameworks cannot share random draws, the application is compared with the same drawn
values and the draws by their distribution: seeded on both sides, so a two-sample test gives the
same statistic on every machine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from torchvision_rasampler import RASampler

from train.data.sampler import EpochSampler, example_keys, repeated_augmentation_streams
from train.mixing import (
    BatchAugment,
    augment_batch,
    choose_mix,
    cutmix_box,
    cutmix_weights,
    erase,
    erasing_params,
    mix,
    mix_params,
    mixup_weights,
)
from train.steps import EmaRule

# Two seeded samples of the same distribution give KS statistics well under this at the sizes
# used (the 0.1% critical value for 4000 and 4000 draws is 0.044); a wrong formula (another
# scale, ratio or rounding) moves them far above it.
KS_LIMIT = 0.05
DRAWS = 4000


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def test_erase_matches_torchvision():
    images = np.random.default_rng(0).normal(size=(4, 13, 17, 3)).astype(np.float32)
    rectangles = np.array([(0, 0, 5, 7), (3, 9, 10, 8), (12, 16, 1, 1), (0, 0, 0, 0)])
    ours = np.asarray(erase(jnp.asarray(images), *jnp.asarray(rectangles.T)))
    for image, rectangle, got in zip(images, rectangles, ours, strict=True):
        theirs = TF.erase(nchw(image[None])[0], *map(int, rectangle), torch.tensor(0.0))
        np.testing.assert_array_equal(got, theirs.numpy().transpose(1, 2, 0))


def _torch_erasing_draws(height, width, probability):
    torch.manual_seed(0)
    erasing = v2.RandomErasing(p=1.0)
    image = torch.zeros(3, height, width)
    draws = []
    for _ in range(DRAWS):
        params = erasing.make_params([image])
        erased = params["v"] is not None and bool(torch.rand(1) < probability)
        draws.append([params["i"], params["j"], params["h"], params["w"]] if erased else [0] * 4)
    return np.array(draws)


@pytest.mark.parametrize("height,width", [(24, 24), (9, 30)])
def test_erasing_draws_follow_torchvision(height, width):
    probability = 0.7
    keys = jax.random.split(jax.random.key(0), DRAWS)
    ours = np.stack(
        jax.jit(jax.vmap(lambda k: jnp.stack(erasing_params(k, height, width, probability))))(keys)
    )
    theirs = _torch_erasing_draws(height, width, probability)
    erased_ours, erased_theirs = ours[:, 2] > 0, theirs[:, 2] > 0
    # The erased fraction: p times the chance that one of ten tries fits (< 1 at 9x30).
    assert abs(erased_ours.mean() - erased_theirs.mean()) < 5 * np.sqrt(0.25 / DRAWS) * 1.5
    for column, name in enumerate(["top", "left", "h", "w"]):
        a, b = ours[erased_ours, column], theirs[erased_theirs, column]
        assert stats.ks_2samp(a, b).statistic < KS_LIMIT, name
    # Rectangles fit strictly inside, at positions that keep them inside.
    h, w = ours[erased_ours, 2], ours[erased_ours, 3]
    assert (h < height).all() and (w < width).all()
    assert (ours[erased_ours, 0] + h <= height).all() and (ours[erased_ours, 1] + w <= width).all()


def _batch(n=6, height=10, width=14, classes=5):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(n, height, width, 3)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    return images, labels, np.eye(classes, dtype=np.float32)[labels]


def test_mixup_matches_torchvision_with_the_same_lambda():
    images, labels, targets = _batch()
    mixer = v2.MixUp(alpha=0.2, num_classes=5)
    for lam in [0.0, 0.3137, 0.5, 0.999]:
        params = {"labels": torch.from_numpy(labels), "batch_size": len(labels), "lam": lam}
        want_images = mixer.transform(nchw(images), params).numpy().transpose(0, 2, 3, 1)
        want_targets = mixer.transform(params["labels"], params).numpy()
        weights = mixup_weights(jnp.float32(lam), *images.shape[1:3])
        got_images, got_targets = mix(jnp.asarray(images), jnp.asarray(targets), *weights)
        # Each output is a*(1-lam) + b*lam in float32: an FMA may fuse it, so within one
        # rounding of the largest term.
        bound = 2 * np.finfo(np.float32).eps * np.abs(images).max()
        np.testing.assert_allclose(got_images, want_images, rtol=0, atol=bound)
        np.testing.assert_allclose(got_targets, want_targets, rtol=0, atol=2e-7)


def test_cutmix_matches_torchvision_with_the_same_box():
    images, labels, targets = _batch()
    mixer = v2.CutMix(alpha=1.0, num_classes=5)
    height, width = images.shape[1:3]
    for box in [(0, 0, 14, 10), (3, 2, 9, 7), (13, 9, 14, 10), (5, 5, 5, 5)]:
        x1, y1, x2, y2 = box
        lam = 1.0 - (x2 - x1) * (y2 - y1) / (width * height)
        params = {"labels": torch.from_numpy(labels), "batch_size": len(labels), "box": box,
                  "lam_adjusted": lam}  # fmt: skip
        want_images = mixer.transform(nchw(images), params).numpy().transpose(0, 2, 3, 1)
        want_targets = mixer.transform(params["labels"], params).numpy()
        weights = cutmix_weights(box, height, width)
        got_images, got_targets = mix(jnp.asarray(images), jnp.asarray(targets), *weights)
        np.testing.assert_array_equal(got_images, want_images)  # copies, no arithmetic
        np.testing.assert_allclose(got_targets, want_targets, rtol=0, atol=2e-7)


def test_cutmix_boxes_and_lambdas_follow_torchvision():
    # Box sides take few values, so more draws: two seeded samples of 20000 stay under 0.012
    # (seeds 0-2), where a box of the wrong size (e.g. sqrt(lam) for sqrt(1 - lam)) is far out.
    height, width, alpha, draws, limit = 12, 20, 1.0, 20_000, 0.025
    torch.manual_seed(0)
    mixer = v2.CutMix(alpha=alpha, num_classes=3)
    image = torch.zeros(1, 3, height, width)
    theirs = [mixer.make_params([image]) for _ in range(draws)]
    their_boxes = np.array([p["box"] for p in theirs])
    their_lams = np.array([p["lam_adjusted"] for p in theirs])

    @jax.jit
    @jax.vmap
    def draw(key):
        lam_key, box_key = jax.random.split(key)
        box = jnp.stack(cutmix_box(box_key, height, width, jax.random.beta(lam_key, alpha, alpha)))
        return box

    boxes = np.asarray(draw(jax.random.split(jax.random.key(0), draws)))
    # In float64 as torchvision's: float32 values just below its would split their ties.
    lams = 1.0 - (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (height * width)
    for column in range(4):
        assert stats.ks_2samp(boxes[:, column], their_boxes[:, column]).statistic < limit
    assert stats.ks_2samp(lams, their_lams).statistic < limit
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all()
    assert (boxes[:, 3] <= height).all()


def test_mixup_lambda_is_torchvisions_beta_and_the_choice_is_fair():
    images = jnp.asarray(_batch(n=4)[0])
    targets = jnp.eye(5)[:4]  # four different labels
    torch.manual_seed(0)
    mixer = v2.MixUp(alpha=0.2, num_classes=5)
    their_lams = np.array([mixer.make_params([])["lam"] for _ in range(DRAWS)])

    @jax.jit
    @jax.vmap
    def kept_share(key):  # the weight of each image's own target: lam for MixUp
        _, mixed = mix(images, targets, *mix_params(key, 10, 14, 0.2, 0.0))
        return jnp.sum(mixed * targets, -1)[0] - jnp.sum(mixed * jnp.roll(targets, 1, 0), -1)[0]

    keys = jax.random.split(jax.random.key(0), DRAWS)
    lams = (np.asarray(kept_share(keys)) + 1) / 2  # the share was lam - (1 - lam)
    assert stats.ks_2samp(lams, their_lams).statistic < KS_LIMIT

    chosen, alphas = jax.vmap(lambda k: choose_mix(k, 0.2, 1.0))(keys)
    assert abs(np.mean(chosen) - 0.5) < 5 * np.sqrt(0.25 / DRAWS)
    np.testing.assert_array_equal(alphas, np.where(chosen, 1.0, 0.2).astype(np.float32))
    assert choose_mix(keys[0], 0.0, 1.0) == (True, 1.0)  # one of them on: always that one


def test_batches_mix_within_each_group_only():
    images, _, targets = _batch(n=8)
    augment = BatchAugment(mixup_alpha=0.5, cutmix_alpha=1.0, groups=2)
    key = jax.random.key(3)
    mixed, mixed_targets = augment_batch(key, jnp.asarray(images), jnp.asarray(targets), augment)
    # Poisoning the second group changes nothing in the first.
    poisoned = images.copy()
    poisoned[4:] = np.nan
    again, _ = augment_batch(key, jnp.asarray(poisoned), jnp.asarray(targets), augment)
    np.testing.assert_array_equal(again[:4], mixed[:4])
    assert np.isnan(np.asarray(again[4:])).any()
    np.testing.assert_allclose(np.asarray(mixed_targets).sum(-1), 1.0, rtol=1e-6)


def _torchvision_ema_trajectory(weights, decay, every, steps_per_epoch, warmup_epochs):
    """The reference trainer's loop: utils.ExponentialMovingAverage (AveragedModel with
    decay * avg + (1 - decay) * param, buffers too) updated on batches i % every == 0, its
    n_averaged reset during warmup epochs."""
    model = torch.nn.Linear(len(weights[0]), 1, bias=False).double()
    ema_avg = lambda avg, param, num: decay * avg + (1 - decay) * param
    averaged = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_avg, use_buffers=True)
    trajectory = []
    for step, w in enumerate(weights):
        epoch, i = divmod(step, steps_per_epoch)
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(w)[None])
        if i % every == 0:
            averaged.update_parameters(model)
            if epoch < warmup_epochs:
                averaged.n_averaged.fill_(0)
        trajectory.append(averaged.module.weight.detach().numpy()[0].copy())
    return np.array(trajectory)


@pytest.mark.parametrize("every,warmup_epochs", [(1, 0), (3, 2), (4, 1)])
def test_ema_rule_matches_torchvisions_trainer(every, warmup_epochs):
    steps_per_epoch, epochs, decay = 5, 4, 0.7
    weights = np.random.default_rng(0).normal(size=(steps_per_epoch * epochs, 3))
    want = _torchvision_ema_trajectory(weights, decay, every, steps_per_epoch, warmup_epochs)
    rule = EmaRule(decay, every, steps_per_epoch, restart_epochs=warmup_epochs)
    with jax.enable_x64():
        averages = jnp.zeros(3, jnp.float64)  # what the model started from: never kept
        update = jax.jit(rule.update)
        got = []
        for step, w in enumerate(weights):
            averages = update(step, averages, jnp.asarray(w))
            got.append(np.asarray(averages))
    np.testing.assert_allclose(np.array(got), want, rtol=1e-14, atol=1e-15)


def test_ema_decay_is_adjusted_as_torchvisions_trainer_does():
    from train.config import base_config

    config = base_config().unlock()
    config.update(ema_decay=0.99998, ema_steps=32, ema_torchvision=True, batch_size=1024,
                  num_epochs=600, warmup_epochs=5)  # fmt: skip
    rule = EmaRule.from_config(config, steps_per_epoch=1251)
    # train.py: alpha = min(1, (1 - decay) * world_size * batch_size * steps / epochs)
    assert rule.decay == pytest.approx(1 - 2e-5 * 1024 * 32 / 600, rel=1e-12)
    assert (rule.every, rule.restart_epochs) == (32, 5)
    config.ema_decay = 0.9
    copies = EmaRule.from_config(config, 1251)
    assert copies.decay == 0.0  # alpha clipped to 1: each update copies the model
    # Step 2000 is batch 749 of its epoch, not due; step 3817 is batch 64, due (every 32).
    np.testing.assert_array_equal(copies.update(2000, jnp.zeros(3), jnp.ones(3)), jnp.zeros(3))
    np.testing.assert_array_equal(copies.update(3817, jnp.zeros(3), jnp.ones(3)), jnp.ones(3))
    config.ema_decay = 0.0
    assert EmaRule.from_config(config, 1251).decay is None  # no averages


@pytest.mark.parametrize("n,reps,replicas", [(1000, 4, 8), (700, 3, 2), (515, 4, 1), (300, 2, 3)])
def test_repeated_augmentation_streams_are_rasamplers(n, reps, replicas):
    dataset = range(n)
    for epoch in (0, 3):
        g = torch.Generator()
        g.manual_seed(epoch)
        order = torch.randperm(n, generator=g).numpy()
        streams = repeated_augmentation_streams(order, reps, replicas)
        for rank in range(replicas):
            sampler = RASampler(dataset, replicas, rank, seed=0, repetitions=reps)
            sampler.set_epoch(epoch)
            np.testing.assert_array_equal(streams[rank], list(sampler))


def test_epoch_order_gives_each_device_its_rank_stream():
    n, reps, replicas, batch_size = 1100, 4, 4, 32
    sampler = EpochSampler(reps, replicas)
    order = sampler.order(seed=7, epoch=2, num_examples=n, batch_size=batch_size)
    steps = sampler.steps_per_epoch(n, batch_size)
    per_device = batch_size // replicas
    assert steps == len(RASampler(range(n), replicas, 0, repetitions=reps)) // per_device
    assert len(order) == steps * batch_size
    shuffled = np.random.default_rng([7, 2]).permutation(n)
    streams = repeated_augmentation_streams(shuffled, reps, replicas)
    by_device = order.reshape(steps, replicas, per_device)
    for device in range(replicas):
        np.testing.assert_array_equal(by_device[:, device].reshape(-1),
                                      streams[device, : steps * per_device])  # fmt: skip
    # A global batch holds each example up to reps times, each copy with a key of its own.
    keys = example_keys(order, n)
    assert len(np.unique(keys)) == len(keys)
    np.testing.assert_array_equal(keys % n, order)
    # Without repetition: a plain shuffle of whole batches, keys the example indices.
    plain = EpochSampler().order(7, 2, n, batch_size)
    np.testing.assert_array_equal(plain, shuffled[: n // batch_size * batch_size])
    np.testing.assert_array_equal(example_keys(plain, n), plain)


def test_soft_targets_are_smoothed_as_torchs_cross_entropy():
    from train.steps import soft_cross_entropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5))
    targets = rng.dirichlet(np.ones(5), size=6)  # mixed labels: probabilities
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(targets), label_smoothing=0.1,
        reduction="none",
    )  # fmt: skip
    with jax.enable_x64():
        got = soft_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), 0.1)
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-13)
