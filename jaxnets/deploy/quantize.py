"""int8 post-training quantization of an ONNX artifact with ONNX Runtime's `quantize_static`.

Why ONNX Runtime's quantizer: its QDQ format (QuantizeLinear/DequantizeLinear pairs around
float operators) is the one every ONNX runtime reads, ONNX Runtime fuses each Conv and MatMul
with its pairs into one int8 kernel, and the float graph it starts from is the one already
checked against JAX. Weights are quantized per output channel (symmetric int8), activations per
tensor (uint8, from the ranges seen on the calibration images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIBRATION_BATCH = 16


def quantize_onnx(float_model: Path, quantized_model: Path, calibration: np.ndarray,
                  batch: int | None = None) -> None:  # fmt: skip
    """Writes the int8 model of `float_model`, its activation ranges calibrated on
    `calibration` (images as the float model takes them, batch first); `batch`: the model's
    fixed batch size (the images beyond its last whole batch are left out)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            if batch is None:
                count = max(1, len(calibration) // CALIBRATION_BATCH)
                self._batches = iter(np.array_split(calibration, count))
            else:
                if len(calibration) < batch:
                    raise ValueError(f"{len(calibration)} calibration images: fewer than the "
                                     f"fixed batch of {batch}")  # fmt: skip
                whole = len(calibration) // batch * batch
                self._batches = iter(np.split(calibration[:whole], whole // batch))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"input": np.ascontiguousarray(batch)}

    # Shapes inferred and the graph optimized first, as ONNX Runtime's quantizer asks.
    prepared = quantized_model.with_name(quantized_model.name + ".prepared.onnx")
    quant_pre_process(str(float_model), str(prepared), skip_optimization=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice, printed through the root logger
    try:
        _quantize(quantize_static, prepared, quantized_model, Batches())
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)


def _quantize(quantize_static, prepared: Path, quantized_model: Path, batches) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    quantize_static(
        str(prepared), str(quantized_model), batches,
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )  # fmt: skip
