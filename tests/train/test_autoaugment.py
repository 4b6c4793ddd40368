"""train.data.autoaugment against torchvision 0.29's v2 TrivialAugmentWide, RandAugment and
AutoAugment on uint8 tensors: every op's pixels, the magnitude tables and sub-policies, the
distribution of the random draws, and the policy inside tf.data."""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf  # conftest has imported torchvision first (PORTING.md)
import torch
import torchvision.transforms.v2.functional as F
from sklearn.datasets import load_sample_image
from torchvision.transforms.v2 import (
    AutoAugment,
    AutoAugmentPolicy,
    InterpolationMode,
    RandAugment,
    TrivialAugmentWide,
)

from train.data import autoaugment as aa

MODES = {"bilinear": InterpolationMode.BILINEAR, "nearest": InterpolationMode.NEAREST}
TORCHVISION_CLASSES = {"ta_wide": TrivialAugmentWide, "ra": RandAugment}
COLOUR_OPS = [name for name in aa.OPS if name not in aa.GEOMETRIC_OPS]
ANY_SIZE = (None, None, 3)


def torch_fuses_multiply_add() -> bool:
    """Whether torch's CPU kernels round a * b + c once, as its AVX2 and AVX-512 kernels do (and
    the ops under test), rather than twice, as its DEFAULT ones do (ATEN_CPU_CAPABILITY=default):
    probed on a pixel whose grayscale is 169.0 with one rounding and 168.99998 with two."""
    pixel = torch.tensor([40, 252, 80], dtype=torch.uint8).view(3, 1, 1)
    return F.rgb_to_grayscale(pixel.expand(3, 8, 8).contiguous())[0, 0, 0].item() == 169


# Exact equality with torch holds against its fused kernels only; the others round some sums
# twice, one ulp away, which moves a uint8 result by one at rare pixels and a magnitude by an ulp.
needs_fused_torch = pytest.mark.skipif(
    not torch_fuses_multiply_add(),
    reason="torch rounds a * b + c twice here (DEFAULT kernels); the ops follow the fused ones",
)


@functools.cache
def load_photos() -> dict:
    """Small crops of scikit-learn's two photographs, downscaled by taking every 4th pixel: one
    upright (its rotations by 90 degrees resample), one square (they move pixels), and a strip
    too thin for Sharpness's blur."""
    china = load_sample_image("china.jpg")
    flower = load_sample_image("flower.jpg")
    return {
        "china 24x20": np.ascontiguousarray(china[100:196:4, 220:300:4]),
        "flower 20x20": np.ascontiguousarray(flower[150:230:4, 250:330:4]),
        "china 2x9": np.ascontiguousarray(china[200:204:2, 300:336:4]),
    }


@pytest.fixture
def photos():
    return load_photos()


def torchvision_space(policy: str) -> dict:
    if policy in TORCHVISION_CLASSES:
        return TORCHVISION_CLASSES[policy]._AUGMENTATION_SPACE
    return AutoAugment._AUGMENTATION_SPACE


def torchvision_op(image: np.ndarray, name: str, magnitude: float, interpolation: str):
    """What torchvision's _AutoAugmentBase._apply_image_or_video_transform does to a uint8
    image (HWC here, CHW for torch) with fill None: the same functional calls, arguments and
    order."""
    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    mode = MODES[interpolation]
    affine = functools.partial(F.affine, angle=0.0, scale=1.0, interpolation=mode, fill=None)
    shear = math.degrees(math.atan(magnitude)) if name.startswith("Shear") else 0.0
    calls = {
        "Identity": lambda: t,
        "ShearX": lambda: affine(t, translate=[0, 0], shear=[shear, 0.0], center=[0, 0]),
        "ShearY": lambda: affine(t, translate=[0, 0], shear=[0.0, shear], center=[0, 0]),
        "TranslateX": lambda: affine(t, translate=[int(magnitude), 0], shear=[0.0, 0.0]),
        "TranslateY": lambda: affine(t, translate=[0, int(magnitude)], shear=[0.0, 0.0]),
        "Rotate": lambda: F.rotate(t, angle=magnitude, interpolation=mode, fill=None),
        "Brightness": lambda: F.adjust_brightness(t, brightness_factor=1.0 + magnitude),
        "Color": lambda: F.adjust_saturation(t, saturation_factor=1.0 + magnitude),
        "Contrast": lambda: F.adjust_contrast(t, contrast_factor=1.0 + magnitude),
        "Sharpness": lambda: F.adjust_sharpness(t, sharpness_factor=1.0 + magnitude),
        "Posterize": lambda: F.posterize(t, bits=int(magnitude)),
        "Solarize": lambda: F.solarize(t, threshold=255 * magnitude),
        "AutoContrast": lambda: F.autocontrast(t),
        "Equalize": lambda: F.equalize(t),
        "Invert": lambda: F.invert(t),
    }
    return calls[name]().permute(1, 2, 0).numpy()


def torchvision_magnitudes(policy: str, name: str, height: int, width: int) -> list[float]:
    """Every magnitude an op can get in a policy (default bins), with both signs if signed."""
    magnitudes, signed = torchvision_space(policy).get(name, (lambda *size: None, False))
    table = magnitudes(aa.num_bins(policy), height, width)
    if table is None:
        return []
    values = [float(m) for m in table]
    return values + [-m for m in values if m] if signed else values


def geometric_match(got: np.ndarray, expected: np.ndarray, interpolation: str) -> bool:
    """The bound for one resampled image, one that holds whichever CPU kernels either side
    runs.

    Bilinear: TensorFlow's resampling kernel (train/data/autoaugment.py, _bilinear_affine) and
    torch's compute the same coordinates and weights up to float32 rounding, and torch's
    DEFAULT kernels round some sums twice; a value one ulp off crosses a .5 rounding boundary
    at a few pixels: within 1 everywhere (and nearly all equal: test_geometric_op_...).
    Nearest: a coordinate one ulp off on a .5 boundary reads the next pixel, whose value may
    be anything: at least 95% equal. A flipped angle or sign moves most pixels by far more
    (test_geometric_bound_catches_a_flipped_direction)."""
    difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    if interpolation == "nearest":
        return np.mean(difference == 0) >= 0.95
    return difference.max() <= 1


@functools.cache
def compiled_op(name: str, interpolation: str, shape: tuple):
    """The op in a tf.function, magnitude a float64 input. Grappler optimizes the graph: with a
    static shape it sees the image size as a constant, which it would fold into divisions and
    sums (and did, in an early version, changing float32 results)."""
    run = aa.OPS[name]
    if name in aa.GEOMETRIC_OPS:
        run = functools.partial(run, interpolation=interpolation)
    signature = [tf.TensorSpec(shape, tf.uint8), tf.TensorSpec([], tf.float64)]
    return tf.function(run, input_signature=signature)


def op_magnitudes(name: str, height: int, width: int) -> list[float]:
    """TrivialAugmentWide's and AutoAugment's magnitudes of the op (RandAugment's are
    AutoAugment's), with extra bit counts below their tables; 0 for ops without one."""
    values = torchvision_magnitudes("ta_wide", name, height, width)
    values += torchvision_magnitudes("imagenet", name, height, width)
    if name == "Posterize":
        values += [0.0, 1.0]
    return sorted(set(values)) or [0.0]


# ----------------------------------------------------------------------------------------------
# Each op against torchvision.


def test_reference_is_torchvisions_dispatch(photos):
    """torchvision_op makes the calls torchvision's own dispatch makes."""
    image = photos["china 24x20"]
    transform = TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR)
    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    for name in aa.OPS:
        magnitude = {"Posterize": 5.0, "Solarize": 0.4, "Rotate": -20.0}.get(name, -0.3)
        if name.startswith("Translate"):
            magnitude = -7.9
        expected = transform._apply_image_or_video_transform(
            t, name, magnitude, interpolation=InterpolationMode.BILINEAR, fill=transform._fill
        )
        got = torchvision_op(image, name, magnitude, "bilinear")
        np.testing.assert_array_equal(got, expected.permute(1, 2, 0).numpy(), err_msg=name)


@needs_fused_torch
@pytest.mark.parametrize("name", COLOUR_OPS)
def test_colour_op_equals_torchvision(name, photos):
    """Colour and bit ops equal torchvision's exactly, at every magnitude the tables hold (the
    first photo's shape static in the graph, the others' not)."""
    for i, (label, image) in enumerate(photos.items()):
        height, width = image.shape[:2]
        run = compiled_op(name, "bilinear", image.shape if i == 0 else ANY_SIZE)
        for magnitude in op_magnitudes(name, height, width):
            got = run(image, magnitude).numpy()
            expected = torchvision_op(image, name, magnitude, "bilinear")
            np.testing.assert_array_equal(got, expected, err_msg=f"{label}, {magnitude}")


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("name", aa.GEOMETRIC_OPS)
def test_geometric_op_matches_torchvision(name, interpolation, photos):
    """Resampling ops within the geometric bound of torchvision's, at every magnitude the
    tables hold, and over all of them at least 97% of values equal; quarter turns of the square
    photo take torchvision's exact path."""
    equal = total = 0
    for i, (label, image) in enumerate(photos.items()):
        height, width = image.shape[:2]
        run = compiled_op(name, interpolation, image.shape if i == 0 else ANY_SIZE)
        for magnitude in op_magnitudes(name, height, width):
            got = run(image, magnitude).numpy()
            expected = torchvision_op(image, name, magnitude, interpolation)
            assert got.shape == expected.shape, (label, magnitude)
            assert geometric_match(got, expected, interpolation), (label, magnitude)
            equal, total = equal + np.sum(got == expected), total + got.size
    assert equal / total >= 0.97, equal / total


@pytest.mark.parametrize(
    "name, magnitude", [("Rotate", 30.0), ("ShearX", 0.3), ("ShearY", 0.3), ("TranslateX", 5.0)]
)
def test_geometric_bound_catches_a_flipped_direction(name, magnitude, photos):
    """The tolerance above is tight enough to see a rotation or shear the wrong way round."""
    image = photos["china 24x20"]
    expected = torchvision_op(image, name, magnitude, "bilinear")
    flipped = compiled_op(name, "bilinear", ANY_SIZE)(image, -magnitude).numpy()
    assert not geometric_match(flipped, expected, "bilinear")


def test_rotate_by_quarter_turns_moves_pixels(photos):
    """torchvision's fast paths: quarter turns of a square image are exact pixel moves, the
    same as np.rot90 (counter-clockwise for positive angles)."""
    image = photos["flower 20x20"]
    for angle, turns in [(90.0, 1), (-90.0, 3), (180.0, 2), (-180.0, 2), (360.0, 0)]:
        got = compiled_op("Rotate", "bilinear", ANY_SIZE)(image, angle).numpy()
        np.testing.assert_array_equal(got, np.rot90(image, turns), err_msg=str(angle))


# ----------------------------------------------------------------------------------------------
# Tables.


@pytest.mark.parametrize("policy", ["ta_wide", "ra", "imagenet"])
def test_augmentation_space_is_torchvisions(policy):
    ours = aa.augmentation_space(policy)
    theirs = torchvision_space(policy)
    assert list(ours) == list(theirs)
    assert [signed for _, signed in ours.values()] == [signed for _, signed in theirs.values()]
    assert [m is None for m, _ in ours.values()] == [m(2, 8, 8) is None for m, _ in theirs.values()]


@needs_fused_torch
@pytest.mark.parametrize(
    "policy, bins", [("ta_wide", 31), ("ta_wide", 7), ("ra", 31), ("ra", 10), ("imagenet", 10)]
)
def test_magnitudes_equal_torchvisions(policy, bins):
    """Every bin of every table, bit for bit (float32 values; the translations' for many image
    sizes, since int() of them decides the shift). AutoAugment's tables always have 10 bins."""
    space = torchvision_space(policy)
    table_for = tf.function(lambda height, width: aa.magnitude_table(policy, height, width, bins))
    sizes = [(24, 20), (176, 176), (331, 331)] + [(w + 7, w) for w in range(1, 400, 9)]
    for height, width in sizes:
        table = table_for(tf.constant(height), tf.constant(width)).numpy()
        for row, (name, (magnitudes, _)) in zip(table, space.items(), strict=True):
            expected = magnitudes(bins, height, width)
            expected = np.zeros(bins) if expected is None else expected.double().numpy()
            np.testing.assert_array_equal(row, expected, err_msg=f"{name} {height}x{width}")


@pytest.mark.parametrize("policy", ["imagenet", "cifar10", "svhn"])
def test_subpolicies_are_torchvisions(policy):
    torchvision_policy = AutoAugmentPolicy(policy)
    assert aa.SUBPOLICIES[policy] == AutoAugment(torchvision_policy)._policies


# ----------------------------------------------------------------------------------------------
# The random draws.


def draws(policy: str, count: int, **options) -> dict:
    """`count` draws of a policy, seeds (i, 7), made in one tf.data pipeline."""
    seeds = tf.data.Dataset.range(count).map(lambda i: tf.stack([i, tf.constant(7, tf.int64)]))
    choices = seeds.map(lambda seed: aa.draw(seed, policy, **options)._asdict())
    return {key: value.numpy() for key, value in next(iter(choices.batch(count))).items()}


def assert_binomial(successes: int, trials: int, probability: float, what: str):
    """Within 5 standard deviations of the expected count: the seeds are fixed, so a pass is
    stable, and a correct draw fails on another RNG version with probability below 1e-6."""
    sigma = math.sqrt(trials * probability * (1 - probability))
    expected = trials * probability
    assert abs(successes - expected) <= 5 * sigma, (
        f"{what}: {successes} of {trials}, expected {expected:.1f} ± {5 * sigma:.1f}"
    )


def test_trivial_augment_draws_op_bin_and_sign_uniformly():
    """One op of the 14, one bin of the 31, each uniformly, and signs 50/50."""
    count = 12_000
    choices = draws("ta_wide", count)
    ops, bins = choices["op"][:, 0], choices["bin"][:, 0]
    for op, name in enumerate(aa.augmentation_space("ta_wide")):
        assert_binomial(np.sum(ops == op), count, 1 / 14, name)
    for b in range(31):
        assert_binomial(np.sum(bins == b), count, 1 / 31, f"bin {b}")
    assert_binomial(np.sum(choices["negate"]), count, 0.5, "negated")
    assert choices["applied"].all()


def test_randaugment_draws_num_ops_uniformly_at_the_magnitude():
    """num_ops ops, each uniformly of the 14 (repeats allowed), all at the magnitude's bin."""
    count = 6_000
    choices = draws("ra", count, num_ops=3, magnitude=5)
    assert choices["op"].shape == (count, 3)
    for step in range(3):
        for op, name in enumerate(aa.augmentation_space("ra")):
            assert_binomial(np.sum(choices["op"][:, step] == op), count, 1 / 14, f"{step} {name}")
        assert_binomial(np.sum(choices["negate"][:, step]), count, 0.5, f"{step} negated")
    assert (choices["bin"] == 5).all()
    assert choices["applied"].all()


@pytest.mark.parametrize("policy", ["imagenet", "cifar10", "svhn"])
def test_autoaugment_draws_subpolicies_and_their_probabilities(policy):
    """Each sub-policy with probability 1/25 (those listing the same ops and bins counted
    together), each of its ops applied with its probability, signs 50/50."""
    count = 10_000
    choices = draws(policy, count)
    names = list(aa.augmentation_space(policy))
    groups = {}  # (op, bin, op, bin) -> the probabilities of its sub-policies
    for (name0, p0, bin0), (name1, p1, bin1) in aa.SUBPOLICIES[policy]:
        key = (names.index(name0), bin0 or 0, names.index(name1), bin1 or 0)
        groups.setdefault(key, []).append((p0, p1))
    drawn = np.stack([choices["op"][:, 0], choices["bin"][:, 0]] + [
        choices["op"][:, 1], choices["bin"][:, 1]
    ], axis=1)  # fmt: skip
    for key, probabilities in groups.items():
        rows = np.all(drawn == key, axis=1)
        assert_binomial(rows.sum(), count, len(probabilities) / 25, f"sub-policy {key}")
        for step in range(2):
            p = np.mean([pair[step] for pair in probabilities])
            applied = choices["applied"][rows, step].sum()
            assert_binomial(applied, rows.sum(), p, f"{key} op {step} applied")
    assert_binomial(choices["negate"].sum(), 2 * count, 0.5, "negated")


# ----------------------------------------------------------------------------------------------
# The policy.


def torchvision_playback(image: np.ndarray, policy: str, choices) -> np.ndarray:
    """The image through torchvision's own ops in the order and with the magnitudes that
    `choices` (an aa.Draw) picked, magnitudes read off torchvision's tables. A resampling op
    is ours (held to torchvision's within 1 by test_geometric_op_matches_torchvision): a
    later colour op (equalize, posterize, solarize) can turn a difference of 1 into any, so the
    chain is checked exactly around the same resampled pixels."""
    height, width = image.shape[:2]
    space = torchvision_space(policy)
    names = list(space)
    for op, b, negate, applied in zip(*(np.asarray(v) for v in choices), strict=True):
        if not applied:
            continue
        magnitudes, signed = space[names[op]]
        table = magnitudes(aa.num_bins(policy), height, width)
        value = 0.0 if table is None else float(table[b])
        value = -value if signed and negate else value
        if names[op] in aa.GEOMETRIC_OPS:
            image = aa.OPS[names[op]](tf.constant(image), tf.constant(value, tf.float64)).numpy()
        else:
            image = torchvision_op(image, names[op], value, "bilinear")
    return image


@functools.cache
def augmented_in_dataset_map(policy: str) -> list:
    """24 (photo, seed, augmented) through apply_policy in Dataset.map, the three photos in
    turn, their shape unknown to the graph."""
    images = list(load_photos().values())

    def examples():
        for i in range(24):
            yield images[i % 3], [i // 3, 11]

    signature = (tf.TensorSpec(ANY_SIZE, tf.uint8), tf.TensorSpec([2], tf.int64))
    source = tf.data.Dataset.from_generator(examples, output_signature=signature)
    augmented = source.map(lambda image, seed: (image, seed, aa.apply_policy(image, seed, policy)))
    return [tuple(t.numpy() for t in example) for example in augmented]


@pytest.mark.parametrize("policy", aa.POLICIES)
def test_apply_policy_in_dataset_map(policy):
    """uint8 of the same shape out, the same image when run eagerly (a pure function of image
    and seed), different images for different seeds."""
    outputs = augmented_in_dataset_map(policy)
    for image, _, out in outputs:
        assert out.dtype == np.uint8 and out.shape == image.shape
    for image, seed, out in outputs[:3] + outputs[-2:]:
        eager = aa.apply_policy(tf.constant(image), tf.constant(seed), policy)
        np.testing.assert_array_equal(eager.numpy(), out, err_msg=str(seed))
    for k in range(2):  # the 24x20 and 20x20 photos, each under 8 seeds
        assert len({out.tobytes() for _, _, out in outputs[k::3]}) >= 3, k


@needs_fused_torch
@pytest.mark.parametrize("policy", aa.POLICIES)
def test_apply_policy_plays_torchvisions_ops(policy):
    """Each image is torchvision's ops, as drawn for its seed, played on the photo: equal
    where torch's kernels fuse (these CPUs)."""
    for image, seed, out in augmented_in_dataset_map(policy):
        expected = torchvision_playback(image, policy, aa.draw(tf.constant(seed), policy))
        np.testing.assert_array_equal(out, expected, err_msg=str(seed))


def test_randaugment_with_no_ops_is_the_identity(photos):
    image = tf.constant(photos["china 24x20"])
    out = aa.apply_policy(image, tf.constant([1, 2], tf.int64), "ra", num_ops=0)
    np.testing.assert_array_equal(out.numpy(), image.numpy())


def test_unknown_policy_raises():
    image = tf.zeros([8, 8, 3], tf.uint8)
    seed = tf.constant([0, 0], tf.int64)
    with pytest.raises(
        ValueError, match=r"^policy='augmix'.*ta_wide, ra, imagenet, cifar10, svhn$"
    ):
        aa.apply_policy(image, seed, "augmix")
    with pytest.raises(ValueError, match="magnitude=31"):
        aa.apply_policy(image, seed, "ra", magnitude=31)
