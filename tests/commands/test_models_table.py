"""The model table: parameters and multiply-accumulates computed from each architecture's traced
function, against the numbers torchvision publishes in its weight enums."""

import json

import pytest
import torchvision
from conftest import TORCHVISION_MODELS

from jaxnets.cost import model_cost
from jaxnets.registry import list_models
from jaxnets_cli import main as cli


def test_gmacs_scale_with_the_image_and_count_padded_taps():
    # ResNet's work grows with the pixels; the fully connected layer does not.
    small, large = model_cost("resnet18", 64), model_cost("resnet18", 128)
    fc = 512 * 1000 / 1e9
    assert (large.gmacs - fc) == pytest.approx(4 * (small.gmacs - fc), rel=1e-12)
    assert small.params == large.params


def test_the_model_table_and_torchvisions_published_figures(capsys):
    """One pass over every architecture (about 12 s), checked row by row."""
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for name in TORCHVISION_MODELS:
        cost = model_cost(name)  # cached: the numbers the table printed
        for weights in torchvision.models.get_model_weights(name):
            assert cost.params == weights.meta["num_params"], name
            # torchvision publishes GFLOPS (multiply-adds) to three decimals.
            assert round(cost.gmacs, 3) == pytest.approx(weights.meta["_ops"], abs=1e-9), name
        # XLA's count: two flops per multiply-accumulate less the taps over zero padding,
        # plus the elementwise ops: within a few percent of twice the MACs.
        assert 1.8 * cost.gmacs < cost.xla_gflops < 2.1 * cost.gmacs, name

    assert [row["name"] for row in rows] == list_models()
    by_name = {row["name"]: row for row in rows}
    resnet50 = by_name["resnet50"]
    assert resnet50["params"] == 25_557_032 and resnet50["gmacs"] == pytest.approx(4.089, abs=5e-4)
    assert [(w["tag"], w["resize"], w["crop"]) for w in resnet50["weights"]] == [
        ("IMAGENET1K_V1", 256, 224), ("IMAGENET1K_V2", 232, 224)
    ]  # fmt: skip
    assert resnet50["weights"][1]["acc1"] == 80.858
    assert resnet50["weights"][1]["file_size_mb"] == 97.79
    features = [w for w in by_name["vgg16"]["weights"] if w["tag"] == "IMAGENET1K_FEATURES"]
    assert features[0]["acc1"] is None  # an untrained head: no accuracy, valid JSON
    assert by_name["lenet5"]["image_size"] == 32 and by_name["lenet5"]["weights"] == []

    assert cli.main(["models", "--details"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["model", "params", "input", "GMACs"]
    line = next(line for line in table if line.startswith("resnet50 "))
    assert "25,557,032" in line and "4.089" in line and "76.13" in line and "256/224" in line
