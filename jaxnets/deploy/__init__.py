"""Deployment artifacts: a model and its variables as ONNX, a TF SavedModel, TFLite or
serialized StableHLO; ONNX optionally int8-quantized.

    from jaxnets.deploy import export_model
    export_model("resnet50", variables, "onnx", "resnet50.onnx", layout="nchw")

  function.py    the function every format is made from (input signature, preprocessing)
  onnx_graph.py  its jaxpr lowered to ONNX operators (BatchNorm folded, layouts tracked)
  tensorflow.py  SavedModel and TFLite through jax2tf's native serialization
  quantize.py    int8 ONNX through ONNX Runtime's static quantization
  runtime.py     each artifact run back in its own runtime

Each artifact is written beside its destination and renamed into place: a failed export
leaves nothing behind. Its description (architecture, classes, preprocessing, input) travels
with it: inside the ONNX file's metadata, in a SavedModel's assets.extra/jaxnets.json, and in
PATH.json beside a .tflite or .stablehlo file.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jaxnets import extras
from jaxnets.deploy.function import Preprocessing, Signature

FORMATS = ("onnx", "savedmodel", "tflite", "stablehlo")
DEFAULT_OPSET = 17
QUANTIZABLE = ("onnx",)  # tflite: see deploy/tensorflow.py

__all__ = ["FORMATS", "Preprocessing", "Signature", "export_model", "metadata_location"]


def export_model(
    name: str,
    variables: dict,
    format: str,
    out: os.PathLike | str,
    *,
    input_size: tuple[int, int] | None = None,
    batch: int | None = None,
    layout: str = "nhwc",
    dtype: str = "float32",
    preprocessing: Preprocessing | None = None,
    head: str | None = None,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    calibration: np.ndarray | None = None,
    metadata: dict | None = None,
) -> Path:
    """Writes `name` with `variables` as a `format` artifact at `out`.

    Args:
      input_size: (height, width) of the network's input (default: the architecture's; with
        preprocessing, its crop).
      batch: a fixed batch size; None: a dynamic batch dimension.
      layout: "nhwc" or "nchw" (torch's; an ONNX file then has no Transpose at all).
      dtype: "float32", or "bfloat16" for savedmodel and stablehlo.
      preprocessing: uint8 images of one size in, the weights' resize, crop and
        normalization inside the artifact.
      head: the custom head spec the variables were made with (jaxnets.heads).
      quantize: "int8" for post-training static quantization (onnx), calibrated on
        `calibration`: images as the artifact takes them, batch first.
      metadata: extra JSON-able facts to store (class names, where the weights came from).

    Raises:
      ValueError: an unknown format, an input the architecture cannot take, an option the
        format does not have; FileExistsError: `out` exists; MissingExtra: no [export] extra.
    """
    from jaxnets import registry
    from jaxnets.deploy import function

    if input_size is None:
        size = registry.model_info(name).input_size
        input_size = (preprocessing.crop,) * 2 if preprocessing else (size, size)
    signature = Signature(tuple(input_size), batch, layout, dtype, preprocessing)
    _check_options(format, signature, quantize, calibration, opset)
    channels = function.input_channels(name, variables)
    spec = signature.input_spec(channels)
    forward = function.inference_function(name, variables, signature, head)
    description = _description(name, signature, spec, head, format, quantize, metadata)
    out = Path(out)
    with _staged(out) as staging:
        if format == "onnx":
            _write_onnx(forward, spec, staging, opset, description, quantize, calibration)
        elif format == "stablehlo":
            _write_stablehlo(forward, spec, staging)
        else:
            _write_tensorflow(format, forward, spec, staging, description)
        if format in ("tflite", "stablehlo"):
            sidecar = metadata_location(staging, format)
            sidecar.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    return out


def _check_options(format, signature, quantize, calibration, opset) -> None:
    if format not in FORMATS:
        raise ValueError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    if format != "stablehlo":  # JAX alone writes StableHLO
        extras.require("export", f"--format {format}")
    if signature.dtype != "float32" and format in ("onnx", "tflite"):
        raise ValueError(f"--dtype {signature.dtype}: {format} artifacts are float32 (bfloat16: "
                         "savedmodel or stablehlo)")  # fmt: skip
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize {quantize!r}: expected int8")
    if quantize and format not in QUANTIZABLE:
        raise ValueError(f"--quantize int8: {format} is not quantized here (onnx is)")
    if quantize and (calibration is None or not len(calibration)):
        raise ValueError("--quantize int8 needs calibration images")
    if not 13 <= opset <= 21:
        raise ValueError(f"--opset {opset}: expected 13 to 21")


def _description(name, signature, spec, head, format, quantize, metadata) -> dict:
    import dataclasses

    shape = ["batch" if not isinstance(d, int) else d for d in spec.shape]
    return {
        "arch": name, "format": format, "head": head, "quantized": quantize,
        "input": {"name": "input", "shape": shape, "dtype": str(np.dtype(spec.dtype)),
                  "layout": "nhwc" if signature.preprocessing else signature.layout},
        "output": "logits",
        "preprocessing": dataclasses.asdict(signature.preprocessing)
        if signature.preprocessing else None,
        **(metadata or {}),
    }  # fmt: skip


def _write_onnx(forward, spec, staging: Path, opset, description, quantize, calibration):
    import onnx

    from jaxnets.deploy import function, onnx_graph

    closed = function.traced(forward, spec)
    model = onnx_graph.to_onnx(closed, spec, opset=opset, metadata={"jaxnets": json.dumps(
        description, sort_keys=True)})  # fmt: skip
    if not quantize:
        onnx.save(model, str(staging))
        return
    from jaxnets.deploy.quantize import quantize_onnx

    float_model = staging.with_name(staging.name + ".float.onnx")
    try:
        onnx.save(model, str(float_model))
        fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
        quantize_onnx(float_model, staging, calibration, fixed)
    finally:
        float_model.unlink(missing_ok=True)
    quantized = onnx.load(str(staging))
    onnx.helper.set_model_props(quantized, {"jaxnets": json.dumps(description, sort_keys=True)})
    onnx.save(quantized, str(staging))


def _write_stablehlo(forward, spec, staging: Path) -> None:
    import jax

    from jaxnets import layers

    with layers.forms("xla"):
        exported = jax.export.export(jax.jit(forward), platforms=("cpu", "cuda", "tpu"))(spec)
    staging.write_bytes(exported.serialize())


def _write_tensorflow(format, forward, spec, staging: Path, description) -> None:
    from jaxnets.deploy import tensorflow

    if format == "savedmodel":
        tensorflow.save_savedmodel(forward, spec, staging, description)
        return
    with tempfile.TemporaryDirectory(dir=staging.parent, prefix=".savedmodel.") as scratch:
        savedmodel = Path(scratch) / "model"
        tensorflow.save_savedmodel(forward, spec, savedmodel, description)
        staging.write_bytes(tensorflow.tflite_bytes(savedmodel))


def metadata_location(artifact: Path, format: str) -> Path:
    """Where an artifact's description lives (ONNX: inside the file)."""
    artifact = Path(artifact)
    if format == "savedmodel":
        from jaxnets.deploy.tensorflow import METADATA_ASSET

        return artifact / METADATA_ASSET
    return artifact.with_name(artifact.name + ".json")


@contextlib.contextmanager
def _staged(destination: Path) -> Iterator[Path]:
    """A path beside `destination` to write to, renamed onto it when the block succeeds, with
    its description NAME.json if one was written beside it; all removed when anything fails."""
    destination = destination.absolute()
    if destination.exists():
        raise FileExistsError(f"{destination} exists; choose a new --out")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    except OSError as e:
        raise OSError(f"cannot write {destination}: {e.strerror or e}") from None
    staging = scratch / destination.name
    placed: list[Path] = []
    try:
        yield staging
        for companion in scratch.glob(f"{glob.escape(staging.name)}.json"):
            target = destination.parent / companion.name
            if target.exists():
                raise FileExistsError(f"{target} exists; choose a new --out")
            os.replace(companion, target)
            placed.append(target)
        os.replace(staging, destination)
    except BaseException:
        for target in placed:
            target.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
