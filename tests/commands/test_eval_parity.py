"""`jaxnets eval` (against torchvision on the same batches) and `jaxnets parity train` (the same
SGD run in both frameworks), at small sizes; the 50-step runs are in docs/parity.md."""

import json

import pytest
import torch
import torchvision
from conftest import run_cli

from jaxnets_cli.bench import format_table
from jaxnets_cli.evaluate import preprocessing_for_file


@pytest.fixture(scope="module")
def resnet18_4_classes(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    path = tmp_path_factory.mktemp("weights") / "resnet18_4.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.float32
def test_eval_compare_torch_on_the_same_batches(image_folder, resnet18_4_classes, capsys):
    code, out, err = run_cli(
        capsys, "eval", "resnet18", "--weights", str(resnet18_4_classes), "--data",
        f"folder:{image_folder}", "--resize", "73", "--crop", "64", "--batch-size", "5",
        "--compare-torch", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 12  # 4 classes x 3 val images, the last batch masked
    assert (result["resize"], result["crop"]) == (73, 64)
    assert result["top1_agreement"] == 1.0
    assert result["max_abs_logit_diff"] < 1e-4
    assert result["top1"] == result["torch"]["top1"] and result["top1_diff_points"] == 0.0
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    assert result["images_per_sec"] > 0

    code, out, _ = run_cli(
        capsys, "eval", "resnet18", "--weights", str(resnet18_4_classes), "--data",
        f"folder:{image_folder / 'val'}", "--resize", "73", "--crop", "64", "--limit", "7",
        "--compare-antialias",
    )  # fmt: skip
    assert code == 0
    assert "7 images, Resize(73) + CenterCrop(64)" in out and "jaxnets      top1" in out
    assert "antialias=False: top1" in out and "same top-1 prediction for" in out


def test_eval_names_the_files_it_could_not_score(broken_folder, resnet18_4_classes, capsys):
    args = ["eval", "resnet18", "--weights", str(resnet18_4_classes), "--data",
            f"folder:{broken_folder}", "--resize", "73", "--crop", "64"]  # fmt: skip
    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    result = json.loads(out)
    truncated = str(broken_folder / "val" / "class_00" / "zz_truncated.jpg")
    assert result["images"] == 12  # the 12 sound ones
    assert result["skipped_files"] == {truncated: "cannot be decoded as an image"}
    code, out, _ = run_cli(capsys, *args)
    assert f"skipped 1 unreadable files, not scored: {truncated} (cannot be decoded" in out


def test_eval_preprocessing_follows_the_weights():
    v2 = preprocessing_for_file("resnet50", "resnet50-11ad3fa6.pth")
    assert (v2.resize, v2.crop, v2.source) == (232, 224, "torchvision IMAGENET1K_V2")
    v1 = preprocessing_for_file("resnet50", "resnet50-0676ba61.pth")
    assert (v1.resize, v1.crop) == (256, 224)
    assert preprocessing_for_file("resnet50", "mine.pth").source == "default (V1 recipe)"


def test_eval_errors_are_one_line(image_folder, resnet18_4_classes, tmp_path, capsys):
    cases = [
        (["--weights", str(tmp_path / "none.pth"), "--data", f"folder:{image_folder}"],
         "none.pth"),
        (["--weights", str(resnet18_4_classes), "--data", "imagenet"], "--data 'imagenet'"),
        (["--weights", str(resnet18_4_classes), "--data", f"folder:{tmp_path / 'nowhere'}"],
         "no such directory"),
    ]  # fmt: skip
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "r2.pth")
    cases.append(
        (["--weights", str(tmp_path / "r2.pth"), "--data", f"folder:{image_folder}"],
         "has 4 classes, the weights' head 2")
    )  # fmt: skip
    for args, message in cases:
        code, _, err = run_cli(capsys, "eval", "resnet18", *args)
        assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.slow  # a training run
def test_eval_of_a_workdir_repeats_its_training_evaluation(tmp_path, capsys):
    from conftest import tiny_config

    from train.train import train_and_evaluate

    summary = train_and_evaluate(tiny_config(model="lenet5", image_size=32, max_steps=3), tmp_path)
    capsys.readouterr()
    code, out, err = run_cli(capsys, "eval", "lenet5", "--weights", str(tmp_path), "--data",
                             "digits", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 360 and result["crop"] == 32
    assert result["classes"]["mapping"] == "same names"
    # The same 360 images and weights; training normalizes on the device and eval on the host,
    # so an image whose two best logits are within rounding of each other may flip: two may.
    assert result["top1"] == pytest.approx(summary["top1"], abs=2 / 360)
    assert result["top5"] == pytest.approx(summary["top5"], abs=2 / 360)


def parity(capsys, name, *args):
    # A --batch-size or --image-size in args overrides these (argparse keeps the last).
    code, out, err = run_cli(capsys, "parity", "train", name, "--batch-size", "16",
                             "--image-size", "16", "--json", *args)  # fmt: skip
    assert code == 0, err
    return json.loads(out)


@pytest.mark.float32
def test_parity_train_resnet18_float32(capsys):
    """float32: the first loss to rounding, the trajectory within a small multiple of how far
    torch drifts from itself (weights 1 ulp up or down). Which ReLU inputs float32 rounding puts
    on the other side of zero depends on the CPU's kernels, and at 16x16 (1x1 maps in layer4)
    one such unit moves the first gradient by ~3e-3 and the second loss by ~1e-3, so no fixed
    float32 bound on later steps holds everywhere."""
    result = parity(capsys, "resnet18", "--steps", "8", "--noise-floor", "--eval")
    assert len(result["jax_losses"]) == len(result["torch_losses"]) == 8
    assert [len(losses) for losses in result["torch_losses_nudged"]] == [8, 8]
    # The first loss is a forward pass at identical weights, continuous in rounding: ~1e-6.
    (jax_loss, *_), (torch_loss, *_) = result["jax_losses"], result["torch_losses"]
    assert abs(jax_loss - torch_loss) < 2e-5 * abs(torch_loss)
    # By step 8 both pairs have drifted apart as far as this chaotic setup goes (0.1-0.4);
    # measured ratios 0.7-1.5 on three CPU code paths.
    assert 0 < result["max_rel_diff"] <= 4 * result["torch_noise_max_rel_diff"]
    # The first float32 gradient of both frameworks against torch's float64 one. The head's
    # (no ReLU between it and the loss) is rounding only, ~5e-6. The whole gradient is ~5e-6
    # plus ~3e-3 for each ReLU input that float32 flips (0 or 1 here, by chance); a wrong
    # gradient would be off by O(1).
    for framework in ("jax", "torch"):
        assert 0 < result[f"{framework}_float32_head_grad_rel_err"] < 1e-4
        assert 0 < result[f"{framework}_float32_grad_rel_err"] < 3e-2
    assert 0 <= result["jax_test_top1"] <= 1 and 0 <= result["torch_nudged_test_top1"] <= 1
    # Accuracies can differ by at most the share of images whose predictions differ.
    assert abs(result["test_top1_diff_points"]) <= 100 * (1 - result["test_agreement"]) + 1e-9


def test_parity_train_resnet18_float64(capsys):
    """float64: agreement to ~1e-12 over many steps, with Nesterov: the two updates are the
    same computation (the float32 test above says why float32 cannot show it)."""
    result = parity(capsys, "resnet18", "--steps", "8", "--float64", "--lr", "0.01",
                    "--nesterov")  # fmt: skip
    assert result["max_rel_diff"] < 1e-9, result["max_rel_diff"]
    assert result["jax_losses"][-1] < result["jax_losses"][0]  # it trains


@pytest.mark.slow  # float64 VGG
def test_parity_train_vgg11_bn_without_dropout(capsys):
    """VGG's train step (BatchNorm, max pooling, classifier, dropout 0) in float64, two steps:
    the first update is the same computation. In float32 the second loss differs by whatever
    ReLU flips rounding causes on the CPU at hand (see the ResNet-18 test)."""
    result = parity(capsys, "vgg11_bn", "--steps", "2", "--image-size", "32", "--batch-size",
                    "4", "--float64")  # fmt: skip
    assert result["max_rel_diff"] < 1e-9, result["max_rel_diff"]
    assert result["jax_losses"][1] != result["jax_losses"][0]  # the update changed the model


def test_parity_train_bad_input(capsys):
    code, _, err = run_cli(capsys, "parity", "train", "resnet18", "--steps", "0")
    assert code == 2 and "--steps 0: expected >= 1" in err
    code, _, err = run_cli(capsys, "parity", "train", "resnet5")
    assert code == 2 and "resnet5" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "parity", "train", "resnet18", "--data", "folder:/nowhere")
    assert code == 2 and "/nowhere: no such directory" in err


def test_bench_rows_for_jaxnets_and_torch(capsys):
    code, out, err = run_cli(
        capsys, "bench", "--models", "resnet18", "--batch-size", "2", "--image-size", "32",
        "--steps", "1", "--warmup", "1", "--frameworks", "jaxnets,torch", "--rounds", "3",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["framework"], r["model"]) for r in rows] == [
        ("jaxnets", "resnet18"), ("torch", "resnet18")
    ]  # fmt: skip
    ours, theirs = rows
    for row in rows:
        assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and "error" not in row
    assert ours["compile_s"] > 0 and ours["peak_mem"] > 0  # XLA's accounting of the step
    assert theirs["peak_mem"] is None  # torch on CPU: not measured
    assert theirs["jaxnets_train_ratio"] == ours["train_img_s"] / theirs["train_img_s"]
    for row in rows:  # the frameworks took turns three times; rows hold the median round
        assert len(row["train_img_s_rounds"]) == len(row["infer_img_s_rounds"]) == 3
        assert row["train_img_s"] == sorted(row["train_img_s_rounds"])[1]
        assert row["infer_img_s"] == sorted(row["infer_img_s_rounds"])[1]
    rounds = ", ".join(f"{v:.1f}" for v in ours["train_img_s_rounds"])
    assert f"| jaxnets | {ours['train_img_s']:.1f} [{rounds}] |" in format_table(rows)

    for args, message in [
        (["--models", "resnet5"], "resnet5"),
        (["--frameworks", "torch"], "--frameworks 'torch'"),
        (["--batch-size", "0"], "must be >= 1"),
        (["--rounds", "0"], "must be >= 1"),
    ]:
        code, _, err = run_cli(capsys, "bench", *args)
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_bench_matrix_runs_its_cells_and_prints_one_line_each(capsys, monkeypatch):
    from jaxnets_cli import bench

    # The test above's cell, whose compilation is cached; --models leaves vgg16's out.
    monkeypatch.setattr(bench, "MATRIX", {"resnet18": ((32, 2),), "vgg16": ((64, 2),)})
    args = ["bench", "--matrix", "--models", "resnet18", "--steps", "1", "--warmup", "1"]
    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    rows = json.loads(out)  # --matrix runs jaxnets and torch eager unless told otherwise
    assert [(r["framework"], r["image_size"], r["batch_size"]) for r in rows] == [
        ("jaxnets", 32, 2), ("torch", 32, 2)
    ]  # fmt: skip
    table = bench.format_matrix(rows).splitlines()
    assert table[0].startswith("| model | input, batch | jaxnets train img/s | torch train |")
    ours, theirs = rows
    assert table[2:] == [
        f"| resnet18 | 32x32, 2 | {ours['train_img_s']:.1f} | {theirs['train_img_s']:.1f} | "
        f"{ours['train_img_s'] / theirs['train_img_s']:.2f}x | {ours['infer_img_s']:.1f} | "
        f"{theirs['infer_img_s']:.1f} | {ours['infer_img_s'] / theirs['infer_img_s']:.2f}x |"
    ]
    code, _, err = run_cli(capsys, "bench", "--matrix", "--models", "resnet18,alexnet")
    assert code == 2 and err.count("\n") == 1
    assert "--matrix: no cells for alexnet (the matrix has resnet18, vgg16)" in err


@pytest.mark.slow  # three compiled train steps
def test_bench_remat_applies_to_resnets_only():
    from jaxnets_cli.bench import BenchSettings, jaxnets_runner

    memory = {}
    for name, remat in [("resnet18", False), ("resnet18", True), ("alexnet", True)]:
        runner = jaxnets_runner(name, BenchSettings(batch_size=4, image_size=64, remat=remat))
        runner.train()  # AlexNet has no residual blocks: --remat leaves it as it is
        memory[name, remat] = runner.peak_mem()
    assert memory["resnet18", True] < memory["resnet18", False]  # activations not kept


def test_bench_freeze_adds_frozen_rows_that_train_only_the_head(capsys):
    code, out, err = run_cli(
        capsys, "bench", "--models", "resnet18", "--batch-size", "2", "--image-size", "32",
        "--steps", "1", "--warmup", "1", "--frameworks", "jaxnets,torch", "--freeze", "backbone",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = {r["framework"]: r for r in json.loads(out)}
    assert list(rows) == ["jaxnets", "torch", "jaxnets freeze=backbone", "torch freeze=backbone"]
    # No momentum or gradient for the backbone: the step's memory shrinks.
    assert rows["jaxnets freeze=backbone"]["peak_mem"] < 0.6 * rows["jaxnets"]["peak_mem"]
    frozen_torch = rows["torch freeze=backbone"]
    assert frozen_torch["jaxnets_train_ratio"] == (
        rows["jaxnets freeze=backbone"]["train_img_s"] / frozen_torch["train_img_s"]
    )
    code, _, err = run_cli(capsys, "bench", "--models", "resnet18", "--freeze", "layer9")
    assert code == 2 and "no layer 'layer9' to freeze" in err and err.count("\n") == 1
