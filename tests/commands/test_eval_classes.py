"""`jaxnets eval` matches the dataset's class names with the weights': ImageNet's (by WNID or
torchvision's name) for torchvision's 1000-class heads, the run's for a training workdir.

The heads here are random but for a bias that puts every image's top-1 on one known output, so
the accuracy a correct mapping gives is known exactly and a positional one would score 0."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import largest_file, run_cli
from torchvision.models._meta import _IMAGENET_CATEGORIES

from jaxnets import checkpoints
from jaxnets.convert import from_torchvision
from jaxnets.pretrained import imagenet_classes, imagenet_wnids
from jaxnets_cli import main as cli
from jaxnets_cli.classes import HeadClasses, directory_head, imagenet_head, map_classes
from jaxnets_cli.evaluate import format_report

GOLDFISH, PARACHUTE = ("n01443537", 1), ("n03888257", 701)
SMALL = ("--resize", "73", "--crop", "64", "--batch-size", "4")


def tfds_file(relative: str) -> Path:
    # Located without importing tensorflow_datasets (which imports tensorflow).
    (root,) = importlib.util.find_spec("tensorflow_datasets").submodule_search_locations
    return Path(root) / relative


def test_imagenet_wnids_are_tfds_labels_in_torchvision_order():
    wnids = tfds_file("datasets/imagenet2012/labels.txt").read_text().split()
    assert list(imagenet_wnids()) == wnids and len(wnids) == 1000
    assert wnids == sorted(wnids)  # torchvision's index order is the sorted WNIDs
    assert list(imagenet_classes()) == list(_IMAGENET_CATEGORIES)
    # An independent pairing of WNIDs and names: Imagenette's 10 classes (TFDS's labels file,
    # and the names its builder's docstring lists in that order) land on torchvision's names.
    names = ["tench", "English springer", "cassette player", "chain saw", "church", "French horn",
             "garbage truck", "gas pump", "golf ball", "parachute"]  # fmt: skip
    docstring = " ".join(tfds_file("datasets/imagenette/imagenette_dataset_builder.py")
                         .read_text().split())  # fmt: skip
    assert f"({', '.join(names)})" in docstring
    imagenette = tfds_file("image_classification/imagenette_labels.txt").read_text().split()
    assert [_IMAGENET_CATEGORIES[imagenet_wnids().index(w)] for w in imagenette] == names


def test_map_classes_rules():
    imagenet = imagenet_head()
    same = map_classes(list(imagenet_wnids()), imagenet, 1000)
    assert same.how == "same names" and np.array_equal(same.labels, np.arange(1000))

    subset = map_classes(["goldfish", PARACHUTE[0], "tench"], imagenet, 1000)  # names or WNIDs
    assert subset.how == "by name" and subset.labels.tolist() == [1, 701, 0]
    assert subset.summary.startswith("3 of 1000 classes mapped by name")

    with pytest.raises(ValueError, match=r"4 of its 5 classes are not among the weights' 1000 "
                       r"classes \(ImageNet.*\): 'cat', 'Tench', 'x', \.\.\.$"):  # fmt: skip
        map_classes(["cat", "tench", "Tench", "x", "y"], imagenet, 1000)  # names are exact
    with pytest.raises(ValueError, match="'tench' and 'n01440764' are both the weights' class 0"):
        map_classes(["tench", "n01440764"], imagenet, 1000)

    run = HeadClasses((("cat",), ("dog",), ("fish",)), "the training run's class names")
    assert map_classes(["dog", "fish"], run, 3).labels.tolist() == [1, 2]
    assert map_classes(["fish", "cat", "dog"], run, 3).how == "by name"  # another order
    with pytest.raises(ValueError, match="'bird'; --by-position matches them by index"):
        map_classes(["bird", "cat", "dog"], run, 3)
    forced = map_classes(["bird", "cat", "dog"], run, 3, by_position=True)
    assert forced.how == "by position" and forced.labels.tolist() == [0, 1, 2]

    unchecked = map_classes(["a", "b"], None, 2)
    assert unchecked.how == "unchecked" and "could not be checked" in unchecked.summary
    with pytest.raises(ValueError, match=r"^folder:x has 2 classes, the weights' head 4, and "
                       r"the weights carry no class names to match them by$"):  # fmt: skip
        map_classes(["a", "b"], None, 4, data="folder:x")
    with pytest.raises(ValueError, match="has 2 classes, the weights' head 3; --by-position needs"):
        map_classes(["cat", "dog"], run, 3, by_position=True)


def test_which_directories_name_their_classes():
    assert directory_head({"num_classes": 1000}, 1000, export=True) == imagenet_head()
    assert directory_head({"num_classes": 10}, 10, export=True) is None  # --num-classes
    features = {"weights": {"tag": "IMAGENET1K_FEATURES", "num_classes": None}}
    assert directory_head(features, 1000, export=True) is None  # vgg16's untrained head
    run = directory_head({"class_names": ["a", "b"]}, 2, export=False)
    assert run.names == (("a",), ("b",)) and "training run" in run.source
    assert directory_head({"class_names": None}, 1000, export=False) is None


def biased_resnet18(num_classes: int, favourites: dict[int, float]):
    """A random-init torchvision ResNet-18 whose head adds `favourites` to some logits (~3 at
    most otherwise at 64x64): its top-k are those outputs for every image."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=num_classes)
    with torch.no_grad():
        for index, bias in favourites.items():
            model.fc.bias[index] += bias
    return model


def class_folder(image_folder, root: Path, names: list[str]) -> Path:
    """`root/NAME/*.jpg`, NAME taking the 3 val photos of image_folder's class i."""
    for i, name in enumerate(names):
        shutil.copytree(image_folder / "val" / f"class_{i:02d}", root / name)
    return root


@pytest.mark.float32
def test_imagenet_subset_is_scored_against_imagenet_indices(image_folder, tmp_path, capsys):
    weights = tmp_path / "resnet18_1000.pth"
    torch.save(biased_resnet18(1000, {PARACHUTE[1]: 100.0, GOLDFISH[1]: 50.0}).state_dict(),
               weights)  # fmt: skip
    folder = class_folder(image_folder, tmp_path / "subset", [GOLDFISH[0], PARACHUTE[0]])
    code, out, err = run_cli(capsys, "eval", "resnet18", "--weights", str(weights), "--data",
                             f"folder:{folder}", *SMALL, "--compare-torch", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["classes"]["mapping"] == "by name"
    assert (result["classes"]["dataset"], result["classes"]["head"]) == (2, 1000)
    # Every top-1 is parachute (701), goldfish (1) second: the 3 parachute photos are right, and
    # both classes are in every top-5. Positional labels (0, 1) would give 0 and 0.5.
    assert (result["images"], result["top1"], result["top5"]) == (6, 0.5, 1.0)
    assert (result["torch"]["top1"], result["torch"]["top5"]) == (0.5, 1.0)
    assert result["top1_agreement"] == 1.0
    report = format_report(result)
    assert "classes: 2 of 1000 classes mapped by name (ImageNet" in report
    assert "over all 1000 outputs" in report


def test_imagenet_subset_with_an_unknown_class_is_one_line(image_folder, tmp_path, capsys):
    weights = tmp_path / "resnet18_1000.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    folder = class_folder(image_folder, tmp_path / "subset", [GOLDFISH[0], "not_a_class"])
    code, out, err = run_cli(capsys, "eval", "resnet18", "--weights", str(weights), "--data",
                             f"folder:{folder}", *SMALL)  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"folder:{folder}: 1 of its 2 classes are not among the weights' 1000 classes" in err
    assert "'not_a_class'" in err

    # An export of a 1000-class torchvision file is ImageNet's too; of another head, unnamed.
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r3.pth")
    cases = [(weights, "not among the weights' 1000 classes (ImageNet"),
             (tmp_path / "r3.pth", "has 2 classes, the weights' head 3")]  # fmt: skip
    for source, message in cases:
        export = tmp_path / f"export_{source.stem}"
        assert run_cli(capsys, "convert", "resnet18", "--weights", str(source), "--out",
                       str(export))[0] == 0  # fmt: skip
        code, _, err = run_cli(capsys, "eval", "resnet18", "--weights", str(export), "--data",
                               f"folder:{folder}", *SMALL)  # fmt: skip
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_count_mismatch_without_names_is_one_line(image_folder, tmp_path, capsys):
    """A torchvision file with a 4-class head names no classes: a 2-class folder cannot be
    matched (it used to be scored silently against the first two outputs)."""
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), tmp_path / "r4.pth")
    folder = class_folder(image_folder, tmp_path / "two", ["a", "b"])
    code, out, err = run_cli(capsys, "eval", "resnet18", "--weights", str(tmp_path / "r4.pth"),
                             "--data", f"folder:{folder}", *SMALL)  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"error: folder:{folder} has 2 classes, the weights' head 4" in err


def save_workdir(workdir: Path, model: torch.nn.Module, class_names: list[str]) -> Path:
    """A training workdir as `python -m train` leaves it, written through the same
    jaxnets.checkpoints calls (a checkpoint of the model's weights and the run's description)."""
    path = workdir.with_suffix(".pth")
    torch.save(model.state_dict(), path)
    variables = from_torchvision("resnet18", path)
    state = {"step": np.int32(1), "params": variables["params"],
             "batch_stats": variables["batch_stats"]}  # fmt: skip
    meta = checkpoints.describe("resnet18", "folder:elsewhere", class_names, (64, 64, 3))
    with checkpoints.manager(workdir) as manager:
        checkpoints.save(manager, 1, state, meta)
    return workdir


def test_workdir_class_names_are_checked(image_folder, tmp_path, capsys):
    workdir = save_workdir(tmp_path / "run", biased_resnet18(4, {}), ["cat", "dog", "fish", "bird"])
    data = f"folder:{image_folder}"  # class_00 ... class_03
    code, _, err = run_cli(capsys, "eval", "resnet18", "--weights", str(workdir), "--data", data,
                           *SMALL)  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert ("4 of its 4 classes are not among the weights' 4 classes (the training run's class "
            "names): 'class_00', 'class_01', 'class_02', ...; --by-position") in err  # fmt: skip

    code, out, err = run_cli(capsys, "eval", "resnet18", "--weights", str(workdir), "--data", data,
                             *SMALL, "--by-position", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["classes"]["mapping"] == "by position" and result["images"] == 12


def test_workdir_subset_is_mapped_by_name(image_folder, tmp_path, capsys):
    names = [f"class_{i:02d}" for i in range(4)]
    workdir = save_workdir(tmp_path / "run", biased_resnet18(4, {3: 100.0}), names)
    folder = class_folder(image_folder, tmp_path / "subset", names)
    shutil.rmtree(folder / "class_00")
    shutil.rmtree(folder / "class_02")
    code, out, err = run_cli(capsys, "eval", "resnet18", "--weights", str(workdir), "--data",
                             f"folder:{folder}", *SMALL, "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["classes"]["summary"].startswith("2 of 4 classes mapped by name (the training")
    assert result["top1"] == 0.5  # every top-1 is class_03: its 3 photos of the 6


def test_a_damaged_workdir_is_one_line(image_folder, tmp_path, capfd):
    names = [f"class_{i:02d}" for i in range(4)]
    workdir = save_workdir(tmp_path / "run", biased_resnet18(4, {}), names)
    data = largest_file(workdir / "checkpoints" / "1" / "state")
    data.write_bytes(data.read_bytes()[:1000])
    capfd.readouterr()
    code = cli.main(["eval", "resnet18", "--weights", str(workdir), "--data",
                 f"folder:{image_folder}", *SMALL])  # fmt: skip
    err = capfd.readouterr().err  # file descriptor 2: orbax's threads and absl's warnings too
    assert code == 2 and err.count("\n") == 1, err
    assert f"error: {workdir / 'checkpoints' / '1'}: unreadable (ValueError: OUT_OF_RANGE" in err
