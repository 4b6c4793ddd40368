"""`jaxnets features`, and `convert` / `eval` with custom heads and headless backbones: the
tutorial's fine-tuned PyTorch model into jaxnets and back, strictly, and the bad requests."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, torchvision_model
from torch import nn

from jaxnets import checkpoints
from jaxnets.convert import from_torchvision

SPEC = "dropout:0.5,linear:64,relu,dropout:0.3,linear:N"


def tuned_resnet18(classes=4):
    model = torchvision_model("resnet18")
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 64), nn.ReLU(), nn.Dropout(0.3),
                             nn.Linear(64, classes))  # fmt: skip
    return model.eval()


def test_features_lists_stages_nodes_and_what_a_module_stands_for(capsys):
    code, out, _ = run_cli(capsys, "features", "resnet50")
    assert code == 0
    assert out.splitlines()[1].split() == ["0", "relu", "relu", "2", "[112,", "112,", "64]"]
    assert out.splitlines()[-1].split()[:4] == ["4", "layer4", "layer4.2.relu_2", "32"]
    code, out, _ = run_cli(capsys, "features", "resnet18", "--nodes", "--head", SPEC, "--json")
    rows = json.loads(out)
    assert rows[0] == {"module": "conv1", "node": "conv1", "shape": [112, 112, 64]}
    assert [r["node"] for r in rows[-3:]] == ["fc.2", "fc.3", "fc.4"]
    code, out, _ = run_cli(capsys, "features", "resnet50", "--return-nodes", "layer2,flatten",
                           "--size", "97,131", "--json")  # fmt: skip
    assert json.loads(out) == [
        {"module": "layer2", "node": "layer2.3.relu_2", "shape": [13, 17, 512]},
        {"module": "flatten", "node": "flatten", "shape": [2048]},
    ]
    code, out, _ = run_cli(capsys, "features", "vgg16", "--out-indices", "2,-1", "--json")
    assert [(r["module"], r["reduction"]) for r in json.loads(out)] == [
        ("features.16", 8), ("features.30", 32)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--return-nodes", "layer5"], "resnet50: unknown node 'layer5'; closest: "),
        (["--out-indices", "5"], "index 5 is out of range; resnet50 has 5 feature stages, 0..4"),
        (["--out-indices", "a"], "--out-indices 'a': expected integers"),
        (["--size", "0"], "--size '0': expected H,W or S, positive integers"),
    ],
)
def test_bad_feature_requests_exit_2_in_one_line(args, message, capsys):
    code, _, err = run_cli(capsys, "features", "resnet50", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_tuned_torch_model_goes_to_jaxnets_and_back_strictly(tmp_path, capsys):
    model = tuned_resnet18()
    torch.save(model.state_dict(), tmp_path / "tuned.pth")
    tuned = str(tmp_path / "tuned.pth")
    code, out, err = run_cli(capsys, "convert", "resnet18", "--weights", tuned, "--head", SPEC,
                             "--out", str(tmp_path / "export"))  # fmt: skip
    assert code == 0, err
    assert "(resnet18, 4 classes" in out
    meta = json.loads((tmp_path / "export" / "jaxnets.json").read_text())
    assert meta["head"] == SPEC and meta["num_classes"] == 4
    code, _, err = run_cli(capsys, "convert", "resnet18", "--from-jax", str(tmp_path / "export"),
                           "--out", str(tmp_path / "back.pth"))  # fmt: skip
    assert code == 0, err
    fresh = tuned_resnet18()
    fresh.load_state_dict(torch.load(tmp_path / "back.pth"), strict=True)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_a_headless_backbone_export(tmp_path, capsys):
    torch.save(torchvision_model("resnet18", num_classes=3).state_dict(), tmp_path / "r18.pth")
    code, out, err = run_cli(capsys, "convert", "resnet18", "--weights", str(tmp_path / "r18.pth"),
                             "--features-only", "--out", str(tmp_path / "backbone"))  # fmt: skip
    assert code == 0, err
    assert "backbone, no head" in out
    code, _, err = run_cli(capsys, "convert", "resnet18", "--from-jax", str(tmp_path / "backbone"),
                           "--out", str(tmp_path / "x.pth"))  # fmt: skip
    assert code == 2 and "holds a backbone without its head" in err
    assert not (tmp_path / "x.pth").exists()


def test_eval_scores_a_workdir_with_a_custom_head_as_torch_does(image_folder, tmp_path, capsys):
    """A training workdir whose checkpoint has the spec'd head: eval rebuilds that head, and
    torchvision with the tutorial's nn.Sequential gives the same predictions."""
    model = tuned_resnet18()
    variables = from_torchvision("resnet18", model.state_dict(), head=SPEC)
    state = {"step": np.int32(1), **variables}
    names = [f"class_{i:02d}" for i in range(4)]
    meta = checkpoints.describe("resnet18", "folder:x", names, (64, 64, 3), head=SPEC)
    with checkpoints.manager(tmp_path / "run") as manager:
        checkpoints.save(manager, 1, state, meta)
    code, out, err = run_cli(capsys, "eval", "resnet18", "--weights", str(tmp_path / "run"),
                             "--data", f"folder:{image_folder}", "--resize", "73", "--crop", "64",
                             "--batch-size", "4", "--compare-torch", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["classes"]["head"] == 4
    assert result["top1_agreement"] == 1.0 and result["max_abs_logit_diff"] < 1e-3


@pytest.mark.parametrize(
    "args, message",
    [
        (["features", "resnet18", "--head", "linear:N,relu"], "the last layer must be linear:N"),
        (["convert", "resnet18", "--weights", "W", "--head", "gelu", "--out", "o"],
         "unknown layer 'gelu'"),
        (["convert", "resnet18", "--weights", "TUNED", "--head", "linear:32,relu,linear:N",
          "--out", "OUT"], "the weights' head (fc.1.weight (64, 512), fc.4.weight (4, 64))"),
        (["convert", "resnet18", "--weights", "TUNED", "--out", "OUT"],
         "does not fit torchvision's head (fc.weight (4, 512))"),
    ],
)  # fmt: skip
def test_bad_heads_exit_2_in_one_line_and_write_nothing(args, message, tmp_path, capsys):
    torch.save(tuned_resnet18().state_dict(), tmp_path / "tuned.pth")
    args = [str(tmp_path / "tuned.pth") if a == "TUNED" else str(tmp_path / "out")
            if a == "OUT" else a for a in args]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_parity_features_compares_every_node_with_torchvision(capsys):
    code, out, err = run_cli(capsys, "parity", "features", "--models", "resnet18", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["nodes"] == 69 and len(row["stages"]) == 5
    assert row["worst"] < 1e-4 and max(row["stages"]) <= row["worst"]
    code, _, err = run_cli(capsys, "parity", "features", "--models", "lenet5")
    assert code == 2 and "lenet5 has no torchvision original" in err
