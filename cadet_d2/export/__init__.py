"""Export a cadet_d2 detector (backbone, FPN, RPN, RoI heads, NMS) to ONNX or TorchScript.

``export_model(cfg, "onnx", out_dir)`` writes the file and ``export_meta.json`` (the input /
output contract, :mod:`.contract`); ``load_runner(out_dir, "onnx")`` runs it with ONNX Runtime.
docs/export.md has the contract, the limits and the int8 results.
"""
from .compare import match_detections
from .contract import META_FILE, boxes_to_original, build_meta, preprocess, read_meta, resized_hw
from .evaluate import evaluate_export, evaluate_runner, format_ap_table, model_inputs
from .exporter import FORMATS, ExportMismatchError, build_export_model, export_model
from .runtime import Detections, OnnxRunner, TorchRunner, TorchScriptRunner, load_runner
from .wrapper import ExportableDetector, traceable

__all__ = [
    "Detections", "ExportMismatchError", "ExportableDetector", "FORMATS", "META_FILE", "OnnxRunner", "TorchRunner",
    "TorchScriptRunner", "boxes_to_original", "build_export_model", "build_meta", "evaluate_runner", "export_model",
    "evaluate_export", "format_ap_table", "load_runner", "match_detections", "model_inputs", "preprocess",
    "read_meta", "resized_hw", "traceable",
]
