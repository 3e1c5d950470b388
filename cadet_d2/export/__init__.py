"""Export a cadet_d2 detector (backbone, FPN, RPN, RoI heads, NMS) to ONNX, TorchScript or OpenVINO.

``export_model(cfg, "onnx", out_dir)`` writes the file and ``export_meta.json`` (the input /
output contract, :mod:`.contract`); ``load_runner(out_dir, "onnx")`` runs it with ONNX Runtime (``"openvino"``, ...: OpenVINO,
:mod:`.openvino`, an optional package).
docs/export.md has the contract, the limits and the int8 results.
"""
from .compare import match_detections
from .contract import META_FILE, boxes_to_original, build_meta, check_contract, preprocess, read_meta, resized_hw
from .evaluate import ap_parity, evaluate_export, evaluate_runner, format_ap_table, model_inputs, record_evaluation
from .exporter import FORMATS, ExportMismatchError, build_export_model, export_model
from .runtime import RUNNERS, Detections, OnnxRunner, TorchRunner, TorchScriptRunner, load_runner
from .wrapper import ExportableDetector, traceable

__all__ = [
    "RUNNERS", "Detections", "ExportMismatchError", "ExportableDetector", "FORMATS", "META_FILE", "OnnxRunner", "TorchRunner",
    "TorchScriptRunner", "boxes_to_original", "build_export_model", "build_meta", "check_contract", "ap_parity", "evaluate_runner", "record_evaluation", "export_model",
    "evaluate_export", "format_ap_table", "load_runner", "match_detections", "model_inputs", "preprocess",
    "read_meta", "resized_hw", "traceable",
]
