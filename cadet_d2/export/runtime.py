"""Running an exported detector: ONNX Runtime, TorchScript, OpenVINO, or the PyTorch model, one interface.

Each runner maps one model input (1, C, H, W) float32 numpy array (see :mod:`.contract`) to
:class:`Detections`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .contract import INPUT_NAME, read_meta

FILES = {"onnx": "model.onnx", "onnx_int8": "model_int8.onnx", "torchscript": "model.ts",
         "openvino": "model_openvino.xml", "openvino_bf16": "model_openvino.xml",
         "openvino_int8": "model_openvino_int8.xml"}
# how each kind of export is made (tools/export.py options), for the message of a missing one
HOW = {"onnx": "--format onnx", "onnx_int8": "--format onnx --int8", "torchscript": "--format torchscript",
       "openvino": "--format openvino --precision fp32", "openvino_bf16": "--format openvino --precision bf16",
       "openvino_int8": "--format openvino --precision int8"}


@dataclass
class Detections:
    boxes: np.ndarray  # (N, 4) float32, xyxy in input pixels
    scores: np.ndarray  # (N,) float32, descending
    classes: np.ndarray  # (N,) int64


def _as_detections(boxes, scores, classes) -> Detections:
    to_np = lambda t: t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)  # noqa: E731
    return Detections(to_np(boxes).astype(np.float32), to_np(scores).astype(np.float32),
                      to_np(classes).astype(np.int64))


class OnnxRunner:
    """An ONNX file in an ONNX Runtime CPU session with ``threads`` intra-op threads (0: ORT's default)."""

    def __init__(self, path: str, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray) -> Detections:
        return _as_detections(*self.session.run(None, {INPUT_NAME: np.ascontiguousarray(image, dtype=np.float32)}))


class TorchScriptRunner:
    """A traced TorchScript file (``torch.jit.load``; needs only torch and torchvision)."""

    def __init__(self, path: str):
        import torchvision  # noqa: F401  (registers torchvision::nms and roi_align)

        self.path = path
        self.module = torch.jit.load(path, map_location="cpu").eval()

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Detections:
        return _as_detections(*self.module(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))))


class TorchRunner:
    """The PyTorch model itself (eager), through :class:`~.wrapper.ExportableDetector`."""

    def __init__(self, model: torch.nn.Module):
        from .wrapper import ExportableDetector

        self.wrapper = model if isinstance(model, ExportableDetector) else ExportableDetector(model)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Detections:
        device = self.wrapper.model.device
        return _as_detections(*self.wrapper(torch.as_tensor(np.asarray(image, dtype=np.float32), device=device)))


def _openvino_runner(path: str, threads: int, info: dict):
    from .openvino import OpenVinoRunner

    return OpenVinoRunner(path, threads, info["inference_precision_hint"])


# kind -> runner of (file path, threads, the kind's entry of the meta's "exports")
RUNNERS = {
    "onnx": lambda path, threads, info: OnnxRunner(path, threads),
    "onnx_int8": lambda path, threads, info: OnnxRunner(path, threads),
    "torchscript": lambda path, threads, info: TorchScriptRunner(path),
    "openvino": _openvino_runner, "openvino_bf16": _openvino_runner, "openvino_int8": _openvino_runner,
}


def load_runner(export_dir: str, kind: str = "onnx", threads: int = 0):
    """The runner of ``kind`` (a key of :data:`RUNNERS`: "onnx", "onnx_int8", "torchscript",
    "openvino", "openvino_bf16", "openvino_int8") in an export folder."""
    if kind not in RUNNERS:
        raise KeyError(f"unknown kind {kind!r}; choose from {list(RUNNERS)}")
    meta = read_meta(export_dir)
    name = meta.get("files", {}).get(kind)
    if name is None:
        raise FileNotFoundError(f"{export_dir}: no {kind} export in its export_meta.json (tools/export.py {HOW[kind]})")
    return RUNNERS[kind](os.path.join(export_dir, name), threads, meta.get("exports", {}).get(kind, {}))
