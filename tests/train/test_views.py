"""Test-time views against torchvision's transforms on the same decoded pixels, and the
protocol parser's one-line errors."""

import numpy as np
import pytest
import tensorflow as tf  # conftest has imported torchvision first (PORTING.md)
import torch
import torchvision.transforms.v2.functional as TF

from train.data import preprocess, tfdata
from train.data.protocol import Protocol, parse_protocol
from train.data.views import five_crop, make_views, ten_crop


def _decoded(image_folder, index=0):
    path = sorted((image_folder / "val").rglob("*.jpg"))[index]
    return preprocess.decode_image(tf.constant(path.read_bytes()))


def _chw(image: tf.Tensor) -> torch.Tensor:
    return torch.from_numpy(image.numpy()).permute(2, 0, 1)


def _hwc(images) -> np.ndarray:
    return np.stack([np.asarray(i.permute(1, 2, 0)) for i in images])


@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (40, 40), (41, 64)])
def test_five_and_ten_crop_are_torchvisions_pixel_for_pixel(shape):
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (*shape, 3), np.uint8))
    for size in (32, 37, 21):
        if size > min(shape):
            continue
        assert np.array_equal(
            five_crop(image, size).numpy(), _hwc(TF.five_crop(_chw(image), [size]))
        )
        assert np.array_equal(ten_crop(image, size).numpy(), _hwc(TF.ten_crop(_chw(image), [size])))


def test_views_of_a_photo_follow_torchvisions_resize_then_crop(image_folder):
    """Multi-scale ten-crop: each scale's crops are torchvision's TenCrop of the image resized by
    the evaluation's own resize (tested against torchvision's Resize in test_data.py)."""
    image = _decoded(image_folder)
    protocol = parse_protocol("ten-crop,multi-scale", "72,96", resize=0, crop=64)
    views = make_views(image, protocol)
    assert set(views) == {"crops"} and views["crops"].shape == (20, 64, 64, 3)
    for index, scale in enumerate((72, 96)):
        resized = preprocess.resize_shorter_side(image, scale)
        expected = _hwc(TF.ten_crop(_chw(resized), [64]))
        assert np.array_equal(views["crops"][10 * index : 10 * (index + 1)].numpy(), expected)
    # The standard protocol is the evaluation pipeline's own view.
    standard = make_views(image, parse_protocol("", "", resize=73, crop=64))["crops"][0]
    path_bytes = sorted((image_folder / "val").rglob("*.jpg"))[0].read_bytes()
    evaluation = tfdata.Augmentation(image_size=64, eval_resize=73).eval(tf.constant(path_bytes))
    assert np.array_equal(standard.numpy(), evaluation.numpy())


def test_flip_and_dense_views(image_folder):
    image = _decoded(image_folder)
    views = make_views(image, parse_protocol("flip,dense,five-crop", "", resize=80, crop=64))
    resized = preprocess.resize_shorter_side(image, 80).numpy()
    assert np.array_equal(views["dense_0"].numpy(), np.stack([resized, resized[:, ::-1]]))
    crops = _hwc(TF.five_crop(torch.from_numpy(resized).permute(2, 0, 1), [64]))
    assert np.array_equal(views["crops"].numpy(), np.concatenate([crops, crops[:, :, ::-1]]))
    # Ten-crop holds the mirrors already: flip adds nothing.
    ten = make_views(image, parse_protocol("ten-crop,flip", "", resize=80, crop=64))["crops"]
    assert ten.shape[0] == 10


def test_float_images_resize_in_float():
    """The digits arrive normalized: their views are resized without rounding to uint8."""
    image = tf.constant(np.random.default_rng(0).standard_normal((32, 32, 3)), tf.float32)
    views = make_views(image, parse_protocol("multi-scale,dense", "40", resize=0, crop=32))
    expected = tf.image.resize(image, (40, 40), method="bilinear", antialias=True)
    np.testing.assert_array_equal(views["dense_0"][0].numpy(), expected.numpy())
    assert views["dense_0"].dtype == tf.float32


@pytest.mark.parametrize(
    ("tta", "scales", "views", "name"),
    [
        ("", "", 1, "center-crop at 256"),
        ("flip", "", 2, "center-crop+flip at 256"),
        ("ten-crop", "", 10, "ten-crop at 256"),
        ("ten-crop,flip", "", 10, "ten-crop at 256"),
        ("five-crop,ten-crop", "", 10, "ten-crop at 256"),
        ("five-crop,flip,multi-scale", "256,384,512", 30, "five-crop+flip at 256,384,512"),
        ("dense", "", 1, "dense at 256"),
        ("dense,flip,multi-scale", "256,384", 4, "flip+dense at 256,384"),
        ("dense,ten-crop,multi-scale", "256,384", 22, "ten-crop+dense at 256,384"),
    ],
)
def test_protocol_views_per_image(tta, scales, views, name):
    protocol = parse_protocol(tta, scales, resize=256, crop=224)
    assert protocol.views_per_image == views and protocol.name == name
    assert protocol.standard == (tta == "")


@pytest.mark.parametrize(
    ("tta", "scales", "message"),
    [
        ("flip,mirror", "", "unknown protocol 'mirror'"),
        ("multi-scale", "", "multi-scale needs --scales"),
        ("flip", "256,384", "only with --tta multi-scale"),
        ("multi-scale", "256,abc", "expected positive integers"),
        ("multi-scale,five-crop", "192,256", "192 is below the crop size 224"),
    ],
)
def test_protocol_errors_are_one_line(tta, scales, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_protocol(tta, scales, resize=256, crop=224)
    assert "\n" not in str(error.value)
    assert Protocol(crop=224, scales=(256,)).standard


def test_the_scorer_averages_the_models_softmax_over_the_views():
    """train/tta.py on the digits (normalized floats): flip at the stored size is the mean of
    the model's softmax on each image and its mirror; batches of 4 images, the last padded
    (LeNet-5: the scoring is the same for every model, and it compiles fast)."""
    import jax
    import jax.numpy as jnp

    import jaxnets
    from train.data.arrays import load_digits
    from train.tta import Member, ViewScorer, score_dataset, view_function

    dataset = load_digits(32)
    dataset.eval_images, dataset.eval_labels = dataset.eval_images[:10], dataset.eval_labels[:10]
    model = jaxnets.create_model("lenet5", num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    protocol = parse_protocol("flip", "", resize=0, crop=32)
    scorer = ViewScorer(Member("lenet5", variables), protocol, 10, network_batch=8)
    assert scorer.batch_size == 4  # images of two views each
    scores = score_dataset([scorer], dataset.eval_examples(view_function(protocol)), dataset)
    images = jnp.asarray(dataset.eval_images)
    with jax.default_matmul_precision("highest"):
        direct = [jax.nn.softmax(model.apply(variables, x, train=False)) for x in
                  (images, images[:, :, ::-1])]  # fmt: skip
    np.testing.assert_allclose(scores.probabilities, (direct[0] + direct[1]) / 2, atol=1e-6)
    np.testing.assert_array_equal(scores.labels, dataset.eval_labels)
    assert len(scores.members) == 1
