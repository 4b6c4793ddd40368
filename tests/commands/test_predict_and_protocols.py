"""`jaxnets predict`, `jaxnets eval --tta` and ensembles: the same pixels through torchvision
give the same probabilities; every image mode torchvision's loader reads is read the same way;
bad input is one line, exit 2, and --json output stays valid JSON lines."""

import json

import numpy as np
import pytest
import tensorflow as tf  # conftest has imported torchvision first (PORTING.md)
import torch
import torchvision
from conftest import run_cli
from PIL import Image

from jaxnets.pretrained import imagenet_classes
from jaxnets_cli.predict import Classifier, read_image
from train.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from train.data.protocol import parse_protocol
from train.data.views import make_views

SMALL = ("--resize", "73", "--crop", "64")
FAVOURITE = 701  # parachute: a bias of 8 makes it every image's top-1


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-init torchvision ResNet-18 file, its head biased towards one class."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():
        model.fc.bias[FAVOURITE] += 8.0
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path, model


def photos(image_folder, n=3):
    return sorted((image_folder / "val").rglob("*.jpg"))[:n]


def torch_probabilities(model, image: np.ndarray, tta: str, scales: str = "") -> np.ndarray:
    """torchvision's softmax averaged over the protocol's views of one image (the views cut by
    make_views, tested against torchvision's transforms in tests/train/test_views.py)."""
    protocol = parse_protocol(tta, scales, 73, 64)
    outputs = []
    for views in make_views(tf.constant(image), protocol).values():
        x = (views.numpy().astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        with torch.no_grad():
            logits = model(torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2))
        outputs.append(torch.softmax(logits.double(), -1).numpy())
    return np.concatenate(outputs).mean(0)


@pytest.mark.parametrize(("tta", "scales"), [("", ""), ("flip,five-crop,multi-scale", "73,80")])
def test_predict_gives_torchvisions_probabilities_on_the_same_pixels(
    image_folder, weights, capsys, tta, scales
):
    path, model = weights
    files = [str(p) for p in photos(image_folder)]
    protocol = ["--tta", tta, "--scales", scales] if tta else []
    code, out, err = run_cli(capsys, "predict", "resnet18", "--weights", str(path), *files,
                             *SMALL, *protocol, "--topk", "3", "--json")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["path"] for row in rows] == files
    views = 1 if not tta else 20
    assert f"{views} view(s) per image" in err  # the summary goes to stderr with --json
    for row, file in zip(rows, files, strict=True):
        expected = torch_probabilities(model, read_image(file), tta, scales)
        assert row["indices"][0] == FAVOURITE and row["names"][0] == imagenet_classes()[FAVOURITE]
        assert row["indices"] == list(np.argsort(-expected, kind="stable")[:3])
        # Probabilities are bounded: float32 rounding moves them by ~1e-7.
        np.testing.assert_allclose(row["probabilities"], expected[row["indices"]], atol=1e-5)


def test_classifier_object_holds_the_compiled_network(image_folder, weights):
    path, model = weights
    classifier = Classifier.load("resnet18", str(path), tta="flip", resize=73, crop=64)
    images = [read_image(p) for p in photos(image_folder, 2)]
    probabilities = classifier.probabilities(images)
    assert probabilities.shape == (2, 1000) and classifier.views_per_image == 2
    np.testing.assert_allclose(probabilities[1], torch_probabilities(model, images[1], "flip"),
                               atol=1e-5)  # fmt: skip
    top = classifier.predict([str(photos(image_folder)[0])], k=2)[0]
    assert top.indices[0] == FAVOURITE and len(top.names) == 2


def _image_modes(photo, root):
    """One photograph saved in each mode torchvision's loader meets."""
    rgb = Image.open(photo).convert("RGB").resize((80, 60))
    rgba = rgb.copy()
    rgba.putalpha(128)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    sixteen = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)  # mode I;16
    assert sixteen.mode == "I;16"
    saved = {
        "gray.png": rgb.convert("L"), "gray_alpha.png": rgb.convert("LA"), "rgba.png": rgba,
        "palette.png": palette, "animated.gif": rgb.convert("P"), "cmyk.jpg": rgb.convert("CMYK"),
        "sixteen.png": sixteen, "bits.bmp": rgb.convert("1"), "photo.webp": rgb,
        "photo.tiff": rgb,
    }  # fmt: skip
    for name, image in saved.items():
        image.save(root / name)
    return sorted(root / name for name in saved)


def test_every_image_mode_is_read_as_torchvisions_loader_reads_it(image_folder, weights, tmp_path,
                                                                  capsys):  # fmt: skip
    from torchvision.datasets.folder import pil_loader

    files = _image_modes(photos(image_folder)[0], tmp_path)
    for file in files:
        expected = np.asarray(pil_loader(str(file)))
        assert np.array_equal(read_image(file), expected), file.name
    code, out, err = run_cli(capsys, "predict", "resnet18", "--weights", str(weights[0]),
                             str(tmp_path), *SMALL, "--json", "--topk", "1")  # fmt: skip
    assert code == 0, err
    assert sorted(json.loads(line)["path"] for line in out.splitlines()) == sorted(map(str, files))


def test_unreadable_files_are_named_and_skipped_and_json_stays_valid(image_folder, weights,
                                                                     tmp_path, capsys):  # fmt: skip
    good = photos(image_folder, 2)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    args = ["predict", "resnet18", "--weights", str(weights[0]), *SMALL, "--json"]
    code, out, err = run_cli(
        capsys, *args, str(good[0]), str(tmp_path / "broken.jpg"), str(good[1])
    )
    assert code == 1
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(good[0]), str(good[1])]
    assert "skipped" in err and "broken.jpg: cannot be read as an image" in err
    code, out, err = run_cli(capsys, *args[:-1], str(good[0]))  # text mode
    assert code == 0 and out.splitlines()[0] == str(good[0])
    assert out.splitlines()[1].strip().endswith(f"parachute ({FAVOURITE})")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["MISSING.jpg"], "MISSING.jpg: no such file or directory"),
        (["EMPTY"], "EMPTY: no image files"),
        (["PHOTO", "--tta", "flip,zoom"], "unknown protocol 'zoom'"),
        (["PHOTO", "--tta", "five-crop,multi-scale", "--scales", "60,80"], "60 is below the crop"),
        (["PHOTO", "--tta", "multi-scale"], "multi-scale needs --scales"),
    ],
)
def test_predict_bad_input_is_one_line(image_folder, weights, tmp_path, capsys, extra, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "EMPTY" / "notes.txt").write_text("no images here")
    replace = {"MISSING.jpg": str(tmp_path / "MISSING.jpg"), "EMPTY": str(tmp_path / "EMPTY"),
               "PHOTO": str(photos(image_folder)[0])}  # fmt: skip
    extra = [replace.get(e, e) for e in extra]
    code, out, err = run_cli(capsys, "predict", "resnet18", "--weights", str(weights[0]), *SMALL,
                             *extra, "--json")  # fmt: skip
    assert (code, out) == (2, "") and err.count("\n") == 1 and message in err, err


def test_eval_under_protocols_and_ensembles(image_folder, weights, tmp_path, capsys):
    path = str(weights[0])
    data = ("--data", f"folder:{image_folder}", *SMALL, "--by-position", "--json")
    # 1000-class weights on a 4-class folder: --by-position refuses; an ImageNet-named subset
    # would do, but here the classes only need to be the same for every run.
    code, _, err = run_cli(capsys, "eval", "resnet18", "--weights", path, *data)
    assert code == 2 and "4 classes, the weights' head 1000" in err
    folder = tmp_path / "imagenet"
    for i, wnid in enumerate(["n01440764", "n01443537", "n03888257", "n01484850"]):
        (folder / wnid).mkdir(parents=True)
        for photo in (image_folder / "val" / f"class_{i:02d}").iterdir():
            (folder / wnid / photo.name).write_bytes(photo.read_bytes())
    data = ("--data", f"folder:{folder}", *SMALL, "--json")

    def evaluate(*args):
        code, out, err = run_cli(capsys, "eval", "resnet18", *args, *data)
        assert code == 0, err
        return json.loads(out)

    standard = evaluate("--weights", path)
    # The per-image path at the standard's one scale and crop is the batched evaluation, and
    # an ensemble of a network with itself (named both ways) is that network.
    pair = evaluate(
        "--weights", f"{path},resnet18={path}", "--tta", "multi-scale", "--scales", "73"
    )
    assert pair["images"] == standard["images"] == 12 and pair["views_per_image"] == 2
    for member in pair["members"]:
        assert (member["top1"], member["top5"]) == (standard["top1"], standard["top5"])
        assert member["views_per_image"] == 1
    assert (pair["top1"], pair["top5"]) == (standard["top1"], standard["top5"])
    # Dense views keep each photo's aspect ratio: every new shape compiles, so a few photos.
    ten = evaluate("--weights", path, "--tta", "ten-crop,dense", "--limit", "3")
    assert ten["views_per_image"] == 11 and ten["protocol"] == "ten-crop+dense at 73"
    assert ten["images"] == 3


def test_ensemble_members_with_different_class_counts_are_one_line(image_folder, weights,
                                                                  tmp_path, capsys):  # fmt: skip
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), tmp_path / "four.pth")
    code, out, err = run_cli(capsys, "eval", "resnet18", "--weights",
                             f"{weights[0]},{tmp_path / 'four.pth'}", "--data",
                             f"folder:{image_folder}", *SMALL)  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "ensemble members have different class counts" in err and "1000" in err and " 4)" in err
    code, _, err = run_cli(capsys, "eval", "lenet5", "--weights", str(weights[0]), "--data",
                           "digits", "--tta", "dense", "--compare-torch")  # fmt: skip
    assert code == 2 and "not with --tta or an ensemble" in err
