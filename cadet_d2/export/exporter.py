"""``export_model``: config (+ weights) -> an export folder with the model file(s) and
``export_meta.json``, checked against the PyTorch model."""
from __future__ import annotations

import logging
import os

import torch

from .compare import match_detections
from .contract import build_meta, read_meta, resized_hw, write_meta
from .fingerprint import model_fingerprint
from .runtime import FILES, OnnxRunner, TorchRunner, TorchScriptRunner
from .tracing import example_image
from .wrapper import ExportableDetector

logger = logging.getLogger("cadet_d2")
FORMATS = ("onnx", "torchscript")


class ExportMismatchError(RuntimeError):
    """The exported file does not give the PyTorch model's detections."""


def build_export_model(cfg) -> torch.nn.Module:
    """The config's model on the CPU in eval mode, with ``MODEL.WEIGHTS`` loaded when set
    (:func:`~cadet_d2.inference.load_model`); without weights, initialised with torch seed 0, so
    that an ONNX and a TorchScript export of the same config agree."""
    from ..inference.predictor import load_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"  # the files are traced on the CPU; ONNX Runtime picks its own device
    if not cfg.MODEL.WEIGHTS:
        torch.manual_seed(0)
    return load_model(cfg)


def default_export_hw(cfg) -> tuple[int, int]:
    """The test mapper's size for a 3:4 (H:W) image: the tracing example's size."""
    s = cfg.INPUT.MIN_SIZE_TEST or 320
    return resized_hw(3 * s, 4 * s, {"input": {"resize": {"min_size": s, "max_size": cfg.INPUT.MAX_SIZE_TEST}}})


def verify(runner, reference: TorchRunner, images: list[torch.Tensor], min_iou: float = 0.99,
           max_score_diff: float = 1e-3) -> list[dict]:
    """Compare ``runner`` with the PyTorch model on each (1, C, H, W) image; raise on a mismatch."""
    reports = []
    for image in images:
        x = image.numpy()
        r = match_detections(reference(x), runner(x), min_iou)
        r["hw"] = list(image.shape[-2:])
        reports.append(r)
        if not r["same"] or r["max_score_diff"] > max_score_diff:
            name = getattr(runner, "path", runner)
            raise ExportMismatchError(f"{name} differs from PyTorch on a {r['hw']} image: {r}")
    if reports and not any(r["count_ref"] for r in reports):
        logger.warning(f"[cadet] {getattr(runner, 'path', runner)}: the check vs PyTorch compared no detection (the "
                       "model finds nothing on the check images at MODEL.ROI_HEADS.SCORE_THRESH_TEST): only the "
                       "graph ran; compare on real images with --evaluate")
    return reports


def agreement(runner, reference: TorchRunner, images: list[torch.Tensor], min_iou: float = 0.5) -> list[dict]:
    """How close an approximate export (int8) is to the PyTorch model: :func:`match_detections` at
    ``min_iou`` on each (1, C, H, W) image, reported, never raised (int8 differs by design)."""
    reports = []
    for image in images:
        x = image.numpy()
        r = match_detections(reference(x), runner(x), min_iou)
        reports.append(dict(r, hw=list(image.shape[-2:]), iou_threshold=min_iou))
    return reports


def export_model(cfg, fmt: str, output_dir: str, height: int = 0, width: int = 0, opset: int = 17,
                 int8: bool = False, int8_method: str = "static", calibration: list | None = None,
                 calibration_source: str = "", check: bool = True, model: torch.nn.Module | None = None) -> dict:
    """Export the full detector of ``cfg`` to ``output_dir`` as ``fmt`` ("onnx" or "torchscript").

    Writes ``model.onnx`` (and ``model_int8.onnx`` with ``int8``) or ``model.ts``, and
    ``export_meta.json`` (the contract, see :mod:`.contract`; an existing meta of the folder keeps
    its other files). ``height``/``width``: size of the tracing example (0: the test mapper's
    size of a 3:4 image); the files accept any size. ``check``: run the file on the example and
    on an image of another size (and on the first two ``calibration`` images) and raise
    :class:`ExportMismatchError` unless it gives the PyTorch model's detections (same count,
    IoU >= 0.99, scores within 1e-3); the int8 file's :func:`agreement` on the same images is
    recorded (``exports.onnx_int8.agreement``), not enforced. ``calibration``:
    (1, C, H, W) images for ``int8_method="static"`` (``calibration_source``: where they come
    from, for the meta). Returns the meta.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: choose from {list(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ValueError("--int8 needs --format onnx (quantization by ONNX Runtime)")
    model = model if model is not None else build_export_model(cfg)
    wrapper = ExportableDetector(model)
    dh, dw = default_export_hw(cfg)
    height, width = height or dh, width or dw
    channels = len(cfg.MODEL.PIXEL_MEAN)
    image = example_image(channels, height, width)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FILES[fmt])
    if fmt == "onnx":
        from .to_onnx import export_onnx

        found = export_onnx(wrapper, image, path, opset)
    else:
        from .to_torchscript import export_torchscript

        found = export_torchscript(wrapper, image, path)
    logger.info(f"[cadet] {path}: traced with {len(found)} distinct warnings (expected, see docs/export.md)")
    exports = {fmt: {"file": FILES[fmt], "trace_warnings": found, "weights": cfg.MODEL.WEIGHTS}}
    if fmt == "onnx":
        exports[fmt].update(opset=opset, exporter="torch.onnx.export(dynamo=False)")
    # the example, an image of another size, and up to two real (calibration) images
    check_images = [image, example_image(channels, height + 32, max(32, width - 32), seed=1),
                    *(torch.as_tensor(c) for c in (calibration or [])[:2])]
    if check:
        runner = OnnxRunner(path) if fmt == "onnx" else TorchScriptRunner(path)
        exports[fmt]["checks"] = verify(runner, TorchRunner(wrapper), check_images)
    if int8:
        from .quantize import quantize_int8

        int8_path = os.path.join(output_dir, FILES["onnx_int8"])
        quantize_int8(path, int8_path, int8_method, calibration)
        exports["onnx_int8"] = {"file": FILES["onnx_int8"], "method": int8_method, "from": FILES["onnx"]}
        if int8_method == "static":
            exports["onnx_int8"]["calibration"] = {"source": calibration_source, "images": len(calibration or [])}
        if check:
            exports["onnx_int8"]["agreement"] = agreement(OnnxRunner(int8_path), TorchRunner(wrapper), check_images)
    fingerprint = model_fingerprint(model, build_meta(cfg, (height, width), {}), cfg)
    old = previous_exports(output_dir, fingerprint, exports)
    if fmt == "onnx":  # a new model.onnx makes an older model_int8.onnx stale
        old.pop("onnx_int8", None)
    exports = {**old, **exports}
    meta = build_meta(cfg, (height, width), {k: v["file"] for k, v in exports.items()}, exports=exports,
                      model_fingerprint=fingerprint)
    write_meta(output_dir, meta)
    return meta


def previous_exports(output_dir: str, fingerprint: str, new: dict) -> dict:
    """The exports an existing ``export_meta.json`` of ``output_dir`` lists besides ``new``, when
    they are of the same model (same ``model_fingerprint``). Those of another model (other weights,
    config or contract) are removed, with a warning: one folder holds one model, and
    ``--evaluate`` / ``load_runner`` take every file the meta lists as that model."""
    try:
        meta = read_meta(output_dir)
    except FileNotFoundError:
        return {}
    old = {k: v for k, v in meta.get("exports", {}).items() if k not in new}
    if meta.get("model_fingerprint") == fingerprint or not old:
        return old
    for info in old.values():
        path = os.path.join(output_dir, info["file"])
        if os.path.isfile(path) and info["file"] not in {v["file"] for v in new.values()}:
            os.remove(path)
    logger.warning(f"[cadet] {output_dir}: removed {', '.join(v['file'] for v in old.values())}, exported from "
                   f"another model (weights {sorted({v.get('weights') or '(none)' for v in old.values()})}, or "
                   "another config); export that format again for this model")
    return {}
