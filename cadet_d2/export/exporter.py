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
FORMATS = ("onnx", "torchscript", "openvino")
# the exports made from model.onnx: a new model.onnx makes those of an older one stale
FROM_ONNX = ("onnx_int8", "openvino", "openvino_bf16", "openvino_int8")


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
                 calibration_source: str = "", check: bool = True, model: torch.nn.Module | None = None,
                 precisions: tuple[str, ...] = ("fp32",)) -> dict:
    """Export the full detector of ``cfg`` to ``output_dir`` as ``fmt`` ("onnx", "torchscript" or
    "openvino").

    Writes ``model.onnx`` (and ``model_int8.onnx`` with ``int8``) or ``model.ts``, and
    ``export_meta.json`` (the contract, see :mod:`.contract`; an existing meta of the folder keeps
    its other files). ``height``/``width``: size of the tracing example (0: the test mapper's
    size of a 3:4 image); the files accept any size. ``check``: run the file on the example and
    on an image of another size (and on the first two ``calibration`` images) and raise
    :class:`ExportMismatchError` unless it gives the PyTorch model's detections (same count,
    IoU >= 0.99, scores within 1e-3); the int8 file's :func:`agreement` on the same images is
    recorded (``exports.onnx_int8.agreement``), not enforced. ``calibration``:
    (1, C, H, W) images for ``int8_method="static"`` (``calibration_source``: where they come
    from, for the meta; also OpenVINO int8's). ``openvino``: ``model.onnx`` as above, then its
    OpenVINO IRs of ``precisions`` ("fp32", "bf16", "int8"; :func:`openvino_exports`). Returns
    the meta.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: choose from {list(FORMATS)}")
    if int8 and fmt == "torchscript":
        raise ValueError("--int8 needs --format onnx or openvino (ONNX Runtime quantizes model.onnx)")
    model = model if model is not None else build_export_model(cfg)
    wrapper = ExportableDetector(model)
    dh, dw = default_export_hw(cfg)
    height, width = height or dh, width or dw
    channels = len(cfg.MODEL.PIXEL_MEAN)
    image = example_image(channels, height, width)
    os.makedirs(output_dir, exist_ok=True)
    source = "torchscript" if fmt == "torchscript" else "onnx"  # OpenVINO converts model.onnx
    path = os.path.join(output_dir, FILES[source])
    if source == "onnx":
        from .to_onnx import export_onnx

        found = export_onnx(wrapper, image, path, opset)
    else:
        from .to_torchscript import export_torchscript

        found = export_torchscript(wrapper, image, path)
    logger.info(f"[cadet] {path}: traced with {len(found)} distinct warnings (expected, see docs/export.md)")
    exports = {source: {"file": FILES[source], "trace_warnings": found, "weights": cfg.MODEL.WEIGHTS}}
    if source == "onnx":
        exports[source].update(opset=opset, exporter="torch.onnx.export(dynamo=False)")
    # the example, an image of another size, and up to two real (calibration) images
    check_images = [image, example_image(channels, height + 32, max(32, width - 32), seed=1),
                    *(torch.as_tensor(c) for c in (calibration or [])[:2])]
    reference = TorchRunner(wrapper) if check else None
    if check:
        runner = OnnxRunner(path) if source == "onnx" else TorchScriptRunner(path)
        exports[source]["checks"] = verify(runner, reference, check_images)
    if int8:
        from .quantize import quantize_int8

        int8_path = os.path.join(output_dir, FILES["onnx_int8"])
        quantize_int8(path, int8_path, int8_method, calibration)
        exports["onnx_int8"] = {"file": FILES["onnx_int8"], "method": int8_method, "from": FILES["onnx"]}
        if int8_method == "static":
            exports["onnx_int8"]["calibration"] = {"source": calibration_source, "images": len(calibration or [])}
        if check:
            exports["onnx_int8"]["agreement"] = agreement(OnnxRunner(int8_path), reference, check_images)
    if fmt == "openvino":
        exports.update(openvino_exports(path, output_dir, precisions, calibration, calibration_source,
                                        (height, width), check_images, reference))
    fingerprint = model_fingerprint(model, build_meta(cfg, (height, width), {}), cfg)
    old = previous_exports(output_dir, fingerprint, exports)
    if source == "onnx":  # a new model.onnx makes the files made from an older one stale
        old = {k: v for k, v in old.items() if k not in FROM_ONNX}
    exports = {**old, **exports}
    meta = build_meta(cfg, (height, width), {k: v["file"] for k, v in exports.items()}, exports=exports,
                      model_fingerprint=fingerprint)
    write_meta(output_dir, meta)
    return meta


def openvino_exports(onnx_path: str, output_dir: str, precisions, calibration: list | None,
                     calibration_source: str, hw: tuple[int, int], check_images: list[torch.Tensor],
                     reference: TorchRunner | None) -> dict:
    """The OpenVINO IRs of ``onnx_path`` in ``output_dir`` (:mod:`.openvino`): fp32 always (bf16
    runs the same file), int8 by NNCF on ``calibration`` resized to ``hw``. With ``reference``,
    fp32 is checked like the ONNX file (:func:`verify`, raises on a mismatch) and bf16 / int8
    report their :func:`agreement` on the same ``check_images``. Returns {kind: meta entry}."""
    from .openvino import PRECISION_HINTS, OpenVinoRunner, convert_onnx, kind_of, quantize_int8, require

    version = require("openvino").__version__
    out = {}
    for p in dict.fromkeys(("fp32", *precisions)):  # fp32 first: the others are made from its IR
        kind = kind_of(p)
        path = os.path.join(output_dir, FILES[kind])
        if p == "fp32":
            convert_onnx(onnx_path, path)
        elif p == "int8":
            quantize_int8(os.path.join(output_dir, FILES["openvino"]), path, calibration or [], hw)
        info = {"file": FILES[kind], "from": os.path.basename(onnx_path), "precision": p,
                "inference_precision_hint": PRECISION_HINTS[p], "openvino": version,
                "shapes": "compiled for each input shape (static), the dynamic graph is never run"}
        if p == "int8":
            info["calibration"] = {
                "source": calibration_source, "images": len(calibration or []), "resized_to": list(hw),
                "method": "nncf.quantize (CNN type, mixed preset, per-tensor activations), RPN and RoI heads in float"}
        if reference is not None:
            runner = OpenVinoRunner(path, 0, PRECISION_HINTS[p], cache_size=1)
            if p == "fp32":
                info["checks"] = verify(runner, reference, check_images)
            else:  # bf16 and int8 move boxes and scores by design: AP (--evaluate) is their measure
                info["agreement"] = agreement(runner, reference, check_images)
        out[kind] = info
    return out


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
        if info["file"] in {v["file"] for v in new.values()}:
            continue
        for f in (path, path[:-4] + ".bin") if path.endswith(".xml") else (path,):  # an OpenVINO IR: .xml + .bin
            if os.path.isfile(f):
                os.remove(f)
    logger.warning(f"[cadet] {output_dir}: removed {', '.join(v['file'] for v in old.values())}, exported from "
                   f"another model (weights {sorted({v.get('weights') or '(none)' for v in old.values()})}, or "
                   "another config); export that format again for this model")
    return {}
