"""Running an exported detector: ONNX Runtime, TorchScript, or the PyTorch model, one interface.

Each runner maps one model input (1, C, H, W) float32 numpy array (see :mod:`.contract`) to
:class:`Detections`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .contract import INPUT_NAME, read_meta

FILES = {"onnx": "model.onnx", "onnx_int8": "model_int8.onnx", "torchscript": "model.ts"}


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


def load_runner(export_dir: str, kind: str = "onnx", threads: int = 0):
    """The runner of ``kind`` ("onnx", "onnx_int8", "torchscript") in an export folder."""
    if kind not in FILES:
        raise KeyError(f"unknown kind {kind!r}; choose from {list(FILES)}")
    name = read_meta(export_dir).get("files", {}).get(kind)
    if name is None:
        how = "--format onnx --int8" if kind == "onnx_int8" else f"--format {kind}"
        raise FileNotFoundError(f"{export_dir}: no {kind} export in its export_meta.json (tools/export.py {how})")
    path = os.path.join(export_dir, name)
    return TorchScriptRunner(path) if kind == "torchscript" else OnnxRunner(path, threads)
