"""`jaxnets export` end to end: a digits model trained here, exported to ONNX in float32 and
int8, scored in ONNX Runtime by `jaxnets eval --artifact` on the digits test images; the
command's one-line errors; `jaxnets bench --task infer`."""

import json

import pytest
import torch
import torchvision
from conftest import run_cli, tiny_config

from jaxnets import extras


@pytest.fixture(scope="module")
def digits_workdir(tmp_path_factory):
    """LeNet-5 trained briefly on the digits at 32x32 (the demo's ResNet-18 takes a minute:
    its figures are in docs/export.md)."""
    from train.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("digits")
    config = tiny_config(model="lenet5", image_size=32, batch_size=32, max_steps=150,
                         learning_rate=0.05, checkpoint_every_steps=150)  # fmt: skip
    train_and_evaluate(config, workdir)
    return workdir


@pytest.mark.slow  # a training run
def test_digits_model_in_onnx_runtime_scores_as_jaxnets_eval(digits_workdir, tmp_path, capsys):
    fp32 = tmp_path / "digits.onnx"
    code, out, err = run_cli(capsys, "export", "lenet5", "--weights", str(digits_workdir),
                             "--format", "onnx", "--out", str(fp32),
                             "--layout", "nchw")  # fmt: skip
    assert code == 0, err
    assert "checked against JAX" in out and "Transpose" not in out
    code, out, err = run_cli(capsys, "eval", "lenet5", "--weights", str(digits_workdir),
                             "--data", "digits", "--artifact", str(fp32), "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 360 and result["top1"] > 0.8
    assert result["artifact"]["top1_agreement"] == 1.0  # identical predictions
    assert result["artifact"]["top1"] == result["top1"]

    int8 = tmp_path / "digits-int8.onnx"
    code, out, err = run_cli(capsys, "export", "lenet5", "--weights", str(digits_workdir),
                             "--format", "onnx", "--out", str(int8), "--quantize", "int8",
                             "--calibration", "digits", "--calibration-images", "128",
                             "--batch", "7")  # fmt: skip
    assert code == 0, err
    assert "int8 on 360 held-out images" in out
    # LeNet-5's 62k weights: scales, biases and the graph are a larger share than a ResNet's
    # (ResNet-18: 25.3%, docs/export.md).
    assert int8.stat().st_size < 0.35 * fp32.stat().st_size
    code, out, err = run_cli(capsys, "eval", "lenet5", "--weights", str(digits_workdir),
                             "--data", "digits", "--artifact", str(int8), "--json")  # fmt: skip
    artifact = json.loads(out)["artifact"]
    assert artifact["top1_agreement"] >= 0.97 and artifact["top1"] > result["top1"] - 0.03

    from jaxnets.deploy import runtime

    description = runtime.read_metadata(int8)
    assert description["classes"] == [str(d) for d in range(10)]
    assert description["quantized"] == "int8"
    assert description["input"]["shape"] == [7, 32, 32, 3]  # 360 images: 51 batches and 3


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_export_errors_are_one_line_and_leave_nothing(resnet18_file, tmp_path, capsys,
                                                      monkeypatch):  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    (out / "file").write_text("")
    weights = ["resnet18", "--weights", str(resnet18_file)]
    cases = [
        (["--format", "pdf", "--out", str(out / "m.pdf")], "--format 'pdf'"),
        (["--format", "onnx", "--out", str(out / "m.onnx"), "--input-size", "0", "0"],
         "below resnet18's minimum"),
        (["--format", "onnx", "--out", str(out / "m.onnx"), "--quantize", "int8",
          "--calibration", "digits", "--input-size", "32", "32"],
         "--calibration digits has 10 classes, the weights 1000"),
        (["--format", "onnx", "--out", str(out / "m.onnx"), "--quantize", "int8"],
         "needs --calibration"),
        (["--format", "tflite", "--out", str(out / "m.tflite"), "--dtype", "bfloat16",
          "--input-size", "32", "32"], "tflite artifacts are float32"),
        (["--format", "onnx", "--out", str(out / "file" / "m.onnx"), "--input-size", "32", "32"],
         "file"),
    ]  # fmt: skip
    for args, message in cases:
        code, _, err = run_cli(capsys, "export", *weights, *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
        assert sorted(p.name for p in out.iterdir()) == ["file"], args
    code, _, err = run_cli(capsys, "export", "resnet1", "--weights", "x", "--format", "onnx",
                           "--out", str(out / "m.onnx"))  # fmt: skip
    assert code == 2 and "resnet18" in err  # the closest names
    monkeypatch.setattr(extras, "missing", lambda extra: ["onnx"] if extra == "export" else [])
    code, _, err = run_cli(capsys, "export", *weights, "--format", "onnx", "--out",
                           str(out / "m.onnx"))  # fmt: skip
    assert code == 2 and "pip install 'jaxnets[export]'" in err and err.count("\n") == 1


def test_export_with_preprocessing_takes_photographs(resnet18_file, tmp_path, capsys):
    out = tmp_path / "r18.onnx"
    code, _, err = run_cli(capsys, "export", "resnet18", "--weights", str(resnet18_file),
                                "--format", "onnx", "--out", str(out), "--include-preprocessing",
                                "--image-size", "240", "320")  # fmt: skip
    assert code == 0, err
    from jaxnets.deploy import runtime

    description = runtime.read_metadata(out)
    assert description["input"]["shape"] == ["batch", 240, 320, 3]
    assert description["input"]["dtype"] == "uint8"
    assert description["preprocessing"] == {
        "image_size": [240, 320], "resize": 256, "crop": 224,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
    }  # fmt: skip
    assert description["classes"][0] == "tench"  # torchvision's names for a 1000-class file
    code, _, err = run_cli(capsys, "eval", "resnet18", "--weights", str(resnet18_file), "--data",
                           "digits", "--artifact", str(out))  # fmt: skip
    assert code == 2 and "takes uint8 images" in err and err.count("\n") == 1, err


def test_bench_infer(capsys):
    code, out, err = run_cli(
        capsys, "bench", "--task", "infer", "--models", "resnet18", "--image-size", "32",
        "--batch-size", "2", "--runs", "2", "--steps", "1", "--json",
        "--runtimes", "jaxnets,onnxruntime,onnxruntime-int8,torch,torch-dynamic-int8",
    )  # fmt: skip
    assert code == 0, err
    rows = {r["runtime"]: r for r in json.loads(out)}
    assert set(rows) == {"jaxnets", "onnxruntime", "onnxruntime-int8", "torch",
                         "torch-dynamic-int8"}  # fmt: skip
    assert rows["onnxruntime-int8"]["bytes"] < 0.26 * rows["onnxruntime"]["bytes"]
    assert all(r["latency_ms_p90"] >= r["latency_ms_median"] > 0 for r in rows.values())
    code, _, err = run_cli(capsys, "bench", "--task", "infer", "--runtimes", "tensorrt")
    assert code == 2 and "unknown tensorrt" in err


def test_calibration_and_its_report_never_share_an_image(image_folder, tmp_path):
    """With one split (a folder without train/, as a TFDS evaluation split), calibration takes
    its first images and the int8 report the rest; too few images is a one-line error."""
    import shutil
    import types

    import jax
    import numpy as np

    import jaxnets
    from jaxnets_cli.export import _calibration_data

    shutil.copytree(image_folder / "val", tmp_path / "only_val" / "val")  # 4 classes x 3
    model = jaxnets.create_model("lenet5", num_classes=4)
    variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    preprocessing = types.SimpleNamespace(crop=32, resize=0)

    def calibrate(count):
        args = types.SimpleNamespace(name="lenet5", input_size=None, calibration_images=count,
                                     calibration=f"folder:{tmp_path / 'only_val'}")  # fmt: skip
        return _calibration_data(args, preprocessing, variables, None)

    calibration, (held_out, labels) = calibrate(5)
    assert len(calibration) == 5 and len(held_out) == len(labels) == 7
    flat = lambda images: {image.tobytes() for image in images}
    assert not flat(calibration) & flat(held_out)
    with pytest.raises(ValueError, match="its 12 images leave none to score int8 on after"):
        calibrate(12)
