"""OpenVINO: an exported ONNX file as an OpenVINO IR (fp32 weights, or int8 by NNCF), and its runner.

* fp32 and bf16 share one IR (``model_openvino.xml`` + ``.bin``, converted from ``model.onnx``
  by ``openvino.convert_model``, weights kept in fp32); bf16 is a compile-time choice, the CPU
  plugin's ``INFERENCE_PRECISION_HINT`` "bf16" (fp32: "f32", which must be asked for: on CPUs
  with AMX or AVX-512-BF16 the plugin's default is bf16).
* int8 (``model_openvino_int8.xml``): NNCF post-training quantization (``nncf.quantize``,
  default (CNN) model type, mixed preset: fake-quantize nodes on the weighted layers of the
  backbone and FPN, convolutions and linear layers, not on the attention's products of two
  activations; ranges from calibration images) of the fp32 IR; the RPN
  and RoI heads (:data:`FLOAT_SCOPES`) and the other ops run at the meta's
  ``INFERENCE_PRECISION_HINT``.
* Shapes: the IR keeps the ONNX file's dynamic H, W, but it is compiled for each input's static
  shape (:class:`OpenVinoRunner`). OpenVINO's CPU plugin runs the dynamic graph wrongly: its
  int64 pad-to-32 arithmetic gives sides that are already a multiple of 32 another 32 px, and
  most other sizes stop with a shape-inference error; with a static shape that arithmetic is
  constant-folded and the detections are the PyTorch model's.

openvino and nncf are optional (``pip install .[openvino]``); they are imported when used.
"""
from __future__ import annotations

import importlib
from collections import OrderedDict

import numpy as np

from .contract import INPUT_NAME, OUTPUT_NAMES

PRECISIONS = ("fp32", "bf16", "int8")
# INFERENCE_PRECISION_HINT of each precision: int8's unquantized ops run in bf16 (on a CPU without
# native bf16 the plugin falls back to f32 by itself)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}
SHAPE_CACHE = 8  # compiled shapes an OpenVinoRunner keeps (least recently used dropped first)
# ops int8 leaves in float (node-name patterns): the RPN and RoI heads, whose box regression int8
# coarsens (demo model: AP -2 to -6 with them quantized, within 0.6 without)
FLOAT_SCOPES = (".*proposal_generator.*", ".*roi_heads.*")


def kind_of(precision: str) -> str:
    """The export kind of an OpenVINO precision: "openvino", "openvino_bf16", "openvino_int8"."""
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision {precision!r}: choose from {list(PRECISIONS)}")
    return "openvino" if precision == "fp32" else f"openvino_{precision}"


class MissingPackageError(ImportError):
    """openvino or nncf is not installed (tools end with its message, no traceback)."""


def require(module: str):
    """Import ``module`` ("openvino" or "nncf"), or raise :class:`MissingPackageError` saying how
    to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackageError(f"the OpenVINO runtime needs the optional package {module!r}, which is not installed: "
                          "pip install .[openvino] (or make setup: requirements.txt pins it)") from e


class OpenVinoRunner:
    """An OpenVINO IR on the CPU, ``threads`` inference threads (0: OpenVINO's default), with
    ``precision_hint`` ("f32" or "bf16"); one (1, C, H, W) float32 input -> :class:`Detections`.

    Each new input shape is compiled once (the model reshaped to that static shape, 1-5 s for
    the demo model); the last ``cache_size`` compiled shapes are kept.
    """

    def __init__(self, path: str, threads: int = 0, precision_hint: str = "f32", cache_size: int = SHAPE_CACHE):
        ov = require("openvino")
        self.path = path
        self.core = ov.Core()
        self.model = self.core.read_model(path)
        self.config = {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY",
                       "NUM_STREAMS": 1}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.cache_size = max(1, int(cache_size))
        self.compiled: OrderedDict[tuple, object] = OrderedDict()

    def request(self, shape: tuple[int, ...]):
        """The infer request of the model compiled for ``shape`` (compiled now if not cached)."""
        if shape in self.compiled:
            self.compiled.move_to_end(shape)
            return self.compiled[shape]
        model = self.model.clone()
        model.reshape({INPUT_NAME: list(shape)})
        req = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        self.compiled[shape] = req
        while len(self.compiled) > self.cache_size:
            self.compiled.popitem(last=False)
        return req

    def __call__(self, image: np.ndarray):
        from .runtime import _as_detections

        x = np.ascontiguousarray(image, dtype=np.float32)
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"expected one image (1, C, H, W), got {x.shape}")
        req = self.request(tuple(x.shape))
        req.infer({INPUT_NAME: x})
        return _as_detections(*(req.get_tensor(name).data.copy() for name in OUTPUT_NAMES))


def convert_onnx(onnx_path: str, xml_path: str) -> str:
    """``model.onnx`` -> an OpenVINO IR at ``xml_path`` (+ ``.bin``), dynamic H, W, fp32 weights."""
    ov = require("openvino")
    ov.save_model(ov.convert_model(onnx_path), xml_path, compress_to_fp16=False)
    return xml_path


def quantize_int8(fp32_xml: str, int8_xml: str, calibration: list[np.ndarray], hw: tuple[int, int]) -> str:
    """NNCF post-training int8 quantization of the IR ``fp32_xml`` into ``int8_xml``.

    ``calibration``: model inputs (1, C, H_i, W_i) float32; each is resized (bilinear,
    half-pixel centres) to ``hw`` and the statistics are collected on the model reshaped to that
    static shape (the dynamic graph is not run: see the module docstring); the quantized model
    is saved with dynamic H, W again.
    """
    import logging

    import torch
    import torch.nn.functional as F

    # quiet: nncf.quantize loads torch.utils.cpp_extension, which warns of a missing CUDA runtime,
    # and logs every ignored node at INFO; its progress bars stay
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    ov, nncf = require("openvino"), require("nncf")
    nncf.set_log_level(logging.WARNING)
    if not calibration:
        raise ValueError("OpenVINO int8 needs calibration images (e.g. --calib-images 32 from the training set)")
    model = ov.Core().read_model(fp32_xml)
    channels = int(np.asarray(calibration[0]).shape[1])
    model.reshape({INPUT_NAME: [1, channels, *hw]})
    inputs = [F.interpolate(torch.as_tensor(np.asarray(x, dtype=np.float32)), size=tuple(hw), mode="bilinear",
                            align_corners=False).numpy() for x in calibration]
    # per-tensor activation ranges: per-channel ones may run along the token axis of MiT's
    # matrix products, whose length is the calibration shape's, and the model would not reshape
    per_tensor = nncf.AdvancedQuantizationParameters(
        activations_quantization_params=nncf.quantization.advanced_parameters.QuantizationParameters(
            per_channel=False))
    quantized = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs), advanced_parameters=per_tensor,
                              preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_SCOPES), validate=False))
    quantized.reshape({INPUT_NAME: ov.PartialShape([1, channels, -1, -1])})
    ov.save_model(quantized, int8_xml, compress_to_fp16=False)
    return int8_xml
