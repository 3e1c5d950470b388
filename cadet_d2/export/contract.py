"""The input/output contract of an exported detector and ``export_meta.json``, which records it.

Contract (version 1), the same for ONNX and TorchScript:

* input ``image``: float32 (1, C, H, W), values 0-255 as stored in the files (NOT normalised:
  the graph subtracts ``MODEL.PIXEL_MEAN`` and divides by ``MODEL.PIXEL_STD`` itself);
  channels = the file channels of ``CADET.INPUT.LAYOUT`` for each modality of
  ``CADET.INPUT.MODALITIES``, in that order; the image already resized as the test mapper does
  (shorter side ``INPUT.MIN_SIZE_TEST``, longer side at most ``INPUT.MAX_SIZE_TEST``, bilinear,
  half-pixel centres, no antialiasing). H and W are dynamic; the graph pads them to a multiple
  of 32 inside. Batch size is 1.
* outputs: ``boxes`` float32 (N, 4) x1 y1 x2 y2 in input pixels (clipped to W, H), ``scores``
  float32 (N,) sorted descending, ``classes`` int64 (N,) indices into ``classes`` of the meta;
  N <= ``MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE`` (0 is possible). To map boxes to the original
  image multiply x by W_orig / W and y by H_orig / H (:func:`boxes_to_original`).

Paired image files (``input.paired_files`` of the meta): the same channels come from one file
per modality, stacked in ``modalities`` order: rgb 3 channels in RGB order, thermal and event 1
(grey; 16-bit scaled to 0-255 by ``thermal_percentiles`` of each image or ``thermal_range``;
3-channel files within ``grey_tolerance`` read as luma, colour thermal through
``thermal_palette``; EXIF orientation applied: :mod:`cadet_d2.data.images`), partners resized
to the RGB size (bilinear); :func:`preprocess_pair` does it. The contract
decodes at full size: with ``CADET.INPUT.REDUCED_DECODE`` the test loader's JPEG input is
decoded smaller first, so it can differ from the contract's by a few grey levels.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import torch
from detectron2.data.transforms import ResizeShortestEdge, ResizeTransform
from PIL import Image

from ..layout import DEFAULT_GREY_TOLERANCE, PAIR_CHANNELS, file_channel_indices
from ..data.datasets import class_names
from ..data.npy import select_channels

CONTRACT_VERSION = 1
META_FILE = "export_meta.json"
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "classes")


def build_meta(cfg, export_hw: tuple[int, int], files: dict[str, str], **extra) -> dict:
    """The JSON-ready contract (see the module docstring); ``files``: {"onnx": "model.onnx", ...}."""
    layout = cfg.CADET.INPUT.LAYOUT
    channels = [{"modality": m, "file_channel": int(c)} for m in cfg.CADET.INPUT.MODALITIES for c in layout[m]]
    return {
        "contract_version": CONTRACT_VERSION,
        "files": dict(files),
        "input": {
            "name": INPUT_NAME, "dtype": "float32", "shape": [1, len(channels), "height", "width"],
            "batch": 1, "dynamic_hw": True, "export_hw": list(export_hw), "value_range": [0.0, 255.0],
            "normalized_inside": True, "pixel_mean": list(cfg.MODEL.PIXEL_MEAN), "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "size_divisibility": 32, "modalities": list(cfg.CADET.INPUT.MODALITIES),
            "file_channels": file_channel_indices(cfg), "file_channel_count": int(cfg.CADET.INPUT.FILE_CHANNELS),
            "channels": channels,
            "paired_files": {
                "modalities": list(cfg.CADET.INPUT.MODALITIES),
                "channels": {m: len(layout[m]) if m == "event" else PAIR_CHANNELS[m]
                             for m in cfg.CADET.INPUT.MODALITIES},
                "rgb_order": "RGB", "thermal_percentiles": list(cfg.CADET.INPUT.THERMAL_PERCENTILES),
                "thermal_range": list(cfg.CADET.INPUT.THERMAL_RANGE), "partners_resized_to": "rgb",
                "grey_tolerance": int(cfg.CADET.INPUT.GREY_TOLERANCE),
                "thermal_palette": cfg.CADET.INPUT.THERMAL_PALETTE, "exif_orientation": "applied",
            },
            "resize": {"min_size": int(cfg.INPUT.MIN_SIZE_TEST), "max_size": int(cfg.INPUT.MAX_SIZE_TEST),
                       "interpolation": "bilinear", "align_corners": False, "antialias": False,
                       "rounding": "int(x + 0.5)"},
        },
        "outputs": {
            "boxes": {"dtype": "float32", "shape": ["N", 4], "format": "xyxy", "units": "input pixels"},
            "scores": {"dtype": "float32", "shape": ["N"], "order": "descending"},
            "classes": {"dtype": "int64", "shape": ["N"]},
        },
        "classes": class_names(cfg),
        "score_thresh": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
        "nms_thresh": float(cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST),
        "max_detections": int(cfg.TEST.DETECTIONS_PER_IMAGE),
        "torch": torch.__version__,
        **extra,
    }


def check_contract(meta: dict, cfg, export_dir: str) -> None:
    """Raise ValueError unless the export's input contract and classes (``meta``) are those
    ``cfg`` gives (the tracing size aside): the images are read for ``cfg``'s model."""
    mine = build_meta(cfg, (0, 0), {})
    keys = [f"input.{k}" for k, v in mine["input"].items() if k != "export_hw" and meta["input"].get(k) != v]
    keys += ["classes"] if meta.get("classes") != mine["classes"] else []
    if keys:
        raise ValueError(f"{export_dir}: exported for another config than this one ({', '.join(keys)} differ); "
                         "give the config the folder was exported with")


def write_meta(export_dir: str, meta: dict) -> str:
    from ..utils.io import atomic_write_json

    path = os.path.join(export_dir, META_FILE)
    atomic_write_json(path, meta)
    return path


def read_meta(export_dir: str) -> dict:
    path = os.path.join(export_dir, META_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no export meta; export with tools/export.py first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resized_hw(height: int, width: int, meta: dict) -> tuple[int, int]:
    """(H, W) the test mapper resizes an image of (height, width) to (unchanged if min_size 0)."""
    r = meta["input"]["resize"]
    if r["min_size"] == 0:
        return height, width
    return ResizeShortestEdge.get_output_shape(height, width, r["min_size"], r["max_size"])


def preprocess(image: np.ndarray, meta: dict) -> np.ndarray:
    """An (H0, W0, file channels) uint8 image -> the model input (1, C, H, W) float32, 0-255.

    Picks ``meta["input"]["file_channels"]`` in order, then resizes like the test mapper
    (bilinear, half-pixel centres, no antialiasing: ``F.interpolate(align_corners=False)``), with
    the mapper's own functions, so the result is bit-identical to its ``image``. Elsewhere (C++,
    OpenCV ``INTER_LINEAR`` on float32) expect differences of ~1e-5 from float rounding.
    """
    inp = meta["input"]
    if image.ndim != 3 or image.shape[2] != inp["file_channel_count"]:
        raise ValueError(f"image is {image.shape}, expected (H, W, {inp['file_channel_count']})")
    return _resized_input(select_channels(image, inp["file_channels"]), meta)  # (H0, W0, C) float32


def paired_image(files: dict[str, str], meta: dict) -> np.ndarray:
    """{modality: image file} -> (H0, W0, C) float32 stack of ``paired_files.modalities``, full size."""
    from ..data.event_frames import read_event_file
    from ..data.images import image_size, read_grey, read_rgb

    spec = meta["input"]["paired_files"]
    size = image_size(files["rgb"]) if "rgb" in files else None  # partners are resized to the RGB size
    parts = []
    for m in spec["modalities"]:
        if m == "rgb":
            parts.append(read_rgb(files[m]).astype(np.float32))
            continue
        tolerance = spec.get("grey_tolerance", DEFAULT_GREY_TOLERANCE)
        if m == "event":  # a grey image, or an (H, W, E) .npy event frame
            g = read_event_file(files[m], spec["channels"][m], 1, spec["thermal_percentiles"], spec["thermal_range"],
                                tolerance)
        else:
            g = read_grey(files[m], 1, spec["thermal_percentiles"], spec["thermal_range"], tolerance,
                          spec.get("thermal_palette", ""))[:, :, None]
        if size is not None and g.shape[:2] != size:
            g = cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_LINEAR).reshape(size[0], size[1], -1)
        parts.append(g.astype(np.float32))
    return np.ascontiguousarray(np.concatenate(parts, axis=2))


def preprocess_pair(files: dict[str, str], meta: dict) -> np.ndarray:
    """{modality: image file} -> the model input (1, C, H, W) float32, 0-255 (as :func:`preprocess`)."""
    return _resized_input(paired_image(files, meta), meta)


def _resized_input(x: np.ndarray, meta: dict) -> np.ndarray:
    """(H0, W0, C) float32 -> (1, C, H, W) resized like the test mapper."""
    h, w = resized_hw(x.shape[0], x.shape[1], meta)
    if (h, w) != x.shape[:2]:  # the mapper's own transform: F.interpolate(bilinear, align_corners=False)
        x = ResizeTransform(x.shape[0], x.shape[1], h, w, Image.BILINEAR).apply_image(x)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def boxes_to_original(boxes: np.ndarray, input_hw: tuple[int, int], original_hw: tuple[int, int]) -> np.ndarray:
    """(N, 4) xyxy boxes in model-input pixels -> pixels of the original (H0, W0) image."""
    sy, sx = original_hw[0] / input_hw[0], original_hw[1] / input_hw[1]
    return boxes * np.array([sx, sy, sx, sy], dtype=boxes.dtype)
