"""int8 ONNX models with ONNX Runtime's quantization tools (CPU inference).

* ``static`` (the default of tools/export.py): weights and activations int8, activation ranges
  calibrated (MinMax) on ``calibration`` images (``quantize_static``, QDQ format, per-channel
  weights), for Conv, MatMul and Gemm only: the box decoding, RoIAlign and NMS stay in float32.
  On the benchmark CPU 1.2x faster than ONNX Runtime fp32 (docs/export.md).
* ``dynamic``: weights int8 ahead of time, activations quantized per batch at run time
  (``quantize_dynamic``; MatMul -> MatMulInteger, Conv -> ConvInteger). No data needed, but
  ONNX Runtime's ConvInteger kernels are slow: 2.7x slower than fp32 on the benchmark CPU.
"""
from __future__ import annotations

import os

import numpy as np

from .contract import INPUT_NAME

METHODS = ("dynamic", "static")
OP_TYPES = ("Conv", "MatMul", "Gemm")


class _Images:
    """ONNX Runtime's CalibrationDataReader over (1, C, H, W) float32 arrays."""

    def __init__(self, images):
        self._it = iter(images)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: np.ascontiguousarray(np.asarray(x), dtype=np.float32)}


def quantize_int8(fp32_path: str, int8_path: str, method: str = "static", calibration: list | None = None) -> str:
    """Write the int8 version of ``fp32_path`` to ``int8_path``; ``calibration``: model inputs
    (1, C, H, W), needed for ``static``. Returns ``int8_path``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method not in METHODS:
        raise ValueError(f"int8 method {method!r}: choose from {list(METHODS)}")
    if method == "dynamic":
        quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "MatMul"])
        return int8_path
    if not calibration:
        raise ValueError("static int8 needs calibration images (e.g. --calib-images 32 from the training set)")
    quantize_static(
        fp32_path, int8_path, _Images(calibration), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(OP_TYPES), per_channel=True, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    if not os.path.isfile(int8_path):
        raise RuntimeError(f"quantize_static wrote no {int8_path}")
    return int8_path
