"""TF SavedModel and TFLite through jax2tf's native serialization, the route current JAX keeps:
the function's StableHLO inside one XlaCallModule op, which TF Serving runs as it is and the
TFLite converter lowers to TFLite's builtin operators (CONV_2D, MAX_POOL_2D, ...)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from jaxnets import layers

METADATA_ASSET = "assets.extra/jaxnets.json"  # TF Serving's place for files it does not read


def _tf():
    import tensorflow as tf

    return tf


def save_savedmodel(function: Callable, spec: jax.ShapeDtypeStruct, directory: Path,
                    metadata: dict) -> None:  # fmt: skip
    """A SavedModel whose `serving_default` signature maps "input" to "logits"."""
    tf = _tf()
    from jax.experimental import jax2tf

    shape = [d if isinstance(d, int) else None for d in spec.shape]
    polymorphic = "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"
    with layers.forms("xla"):
        converted = jax2tf.convert(
            function, polymorphic_shapes=[polymorphic], with_gradient=False,
            native_serialization_platforms=("cpu",),
        )  # fmt: skip
        signature = tf.TensorSpec(shape, tf.as_dtype(np.dtype(spec.dtype)), name="input")

        def serve(images):
            return {"logits": converted(images)}

        module = tf.Module()
        module.serve = tf.function(serve, input_signature=[signature], autograph=False)
        tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    (directory / METADATA_ASSET).parent.mkdir(parents=True, exist_ok=True)
    (directory / METADATA_ASSET).write_text(json.dumps(metadata, indent=2, sort_keys=True))


def tflite_bytes(savedmodel: Path) -> bytes:
    """The SavedModel converted to a TFLite flatbuffer (float32).

    Not int8: TFLiteConverter's post-training quantization (a representative dataset) converts
    these models, but the TFLite interpreter of TensorFlow 2.21 aborts running the result."""
    tf = _tf()
    try:
        return tf.lite.TFLiteConverter.from_saved_model(str(savedmodel)).convert()
    except Exception as e:  # ConverterError carries the whole module in its message
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"TFLite conversion failed: {first[:300]}") from None
