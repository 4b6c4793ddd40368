"""Exported artifacts run in their own runtimes: ONNX Runtime, TensorFlow, the TFLite
interpreter, and JAX for StableHLO (`jax.export.deserialize`). What the export check, the tests,
`jaxnets eval --artifact` and the benchmark run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxnets import extras


def artifact_format(path: Path) -> str:
    """The format of an artifact on disk, from its name (a SavedModel: its directory)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise ValueError(f"{path}: a directory without saved_model.pb is not a SavedModel")
    formats = {".onnx": "onnx", ".tflite": "tflite", ".stablehlo": "stablehlo"}
    if path.suffix not in formats:
        raise ValueError(f"{path}: unknown artifact; expected .onnx, .tflite, .stablehlo or a "
                         "SavedModel directory")  # fmt: skip
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such artifact")
    return formats[path.suffix]


def read_metadata(path: Path) -> dict:
    """The JSON description export_model stored with an artifact."""
    from jaxnets.deploy import metadata_location

    path = Path(path)
    fmt = artifact_format(path)
    if fmt == "onnx":
        extras.require("export", "reading an ONNX artifact")
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        return json.loads(props.get("jaxnets", "{}"))
    location = metadata_location(path, fmt)
    return json.loads(location.read_text()) if location.is_file() else {}


def load_runner(path: Path, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """images (as the artifact takes them, any number) -> logits, in the artifact's runtime.
    An artifact with a fixed batch size runs batches of that size, the last zero-padded."""
    path = Path(path)
    fmt = artifact_format(path)
    # Each runtime reports its input's batch size: an int when it is fixed.
    run, batch = {"onnx": _onnx, "savedmodel": _savedmodel, "tflite": _tflite,
                  "stablehlo": _stablehlo}[fmt](path, threads)  # fmt: skip
    return run if not isinstance(batch, int) else _in_batches_of(batch, run)


def _in_batches_of(size: int, run: Callable[[np.ndarray], np.ndarray]):
    def run_any(images: np.ndarray) -> np.ndarray:
        logits = []
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            count = len(chunk)
            if count < size:
                padding = np.zeros((size - count, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            logits.append(run(chunk)[:count])
        return np.concatenate(logits)

    return run_any


def _onnx(path: Path, threads: int):
    extras.require("export", "running an ONNX artifact")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ValueError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
    batch = session.get_inputs()[0].shape[0]  # "batch" when dynamic
    return (lambda images: session.run(["logits"], {"input": images})[0]), batch


def _savedmodel(path: Path, threads: int):
    extras.require("export", "running a SavedModel")
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    batch = serve.structured_input_signature[1]["input"].shape[0]  # None when dynamic
    return (lambda images: serve(input=tf.constant(images))["logits"].numpy()), batch


def _tflite(path: Path, threads: int):
    extras.require("export", "running a TFLite model")
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads or None)
    interpreter.allocate_tensors()
    (entry,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(images: np.ndarray) -> np.ndarray:
        if tuple(interpreter.get_input_details()[0]["shape"]) != images.shape:
            interpreter.resize_tensor_input(entry["index"], images.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(entry["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(result["index"]).copy()

    batch = int(entry["shape_signature"][0])
    return run, batch if batch > 0 else None


def _stablehlo(path: Path, threads: int):
    import jax

    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:  # flatbuffer errors of several kinds
        raise ValueError(f"{path}: not a serialized jax.export artifact ({e})") from None
    call = jax.jit(exported.call)
    batch = exported.in_avals[0].shape[0]  # symbolic when dynamic
    return (lambda images: np.asarray(call(images))), batch
