"""YOLO label files: ``class xc yc w h`` per line, normalised to [0, 1], with an optional 6th
field: the occlusion level (0 none, 1 partial, 2 heavy; KAIST's converter writes it)."""
from __future__ import annotations

import math

import numpy as np

from ..layout import OCCLUSION_LEVELS
from .errors import DataError, read_lines

MIN_BOX_PIXELS = 1e-3  # a box narrower or lower than this (pixels) is degenerate: dropped, counted


def parse_yolo_line(path: str, lineno: int, line: str, num_classes: int) -> tuple[int, list[float]]:
    """Parse one label line into (class id, [xc, yc, w, h]); raise DataError naming file:line."""
    cls, box, _ = parse_label_line(path, lineno, line, num_classes)
    return cls, box


def parse_label_line(path: str, lineno: int, line: str, num_classes: int) -> tuple[int, list[float], int | None]:
    """Parse one label line into (class id, [xc, yc, w, h], occlusion level or None)."""
    fields = line.split()
    occlusion = None
    if len(fields) == 6:
        if fields[5] not in {str(v) for v in OCCLUSION_LEVELS}:
            raise DataError(path, f"6th field (occlusion level) must be one of {OCCLUSION_LEVELS}, got {line!r}",
                            lineno)
        occlusion = int(fields[5])
        fields = fields[:5]
    if len(fields) != 5:
        raise DataError(path, f"expected 5 fields 'class xc yc w h', got {len(fields)}: {line!r}", lineno)
    try:
        cls_f = float(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise DataError(path, f"non-numeric field in {line!r}", lineno) from None
    if not all(math.isfinite(v) for v in [cls_f] + values):
        raise DataError(path, f"NaN or infinite value in {line!r}", lineno)
    if cls_f != int(cls_f) or not 0 <= int(cls_f) < num_classes:
        raise DataError(
            path, f"class id {fields[0]} outside the {num_classes} classes (ids 0..{num_classes - 1}); "
            "set CADET.DATA.CLASSES or ROOT/classes.txt", lineno,
        )
    if not all(0.0 <= v <= 1.0 for v in values):
        raise DataError(path, f"values must lie in [0, 1] (normalised), got {line!r}", lineno)
    return int(cls_f), values, occlusion


def yolo_to_xyxy(box: list[float], width: int, height: int) -> np.ndarray:
    """Normalised [xc, yc, w, h] -> absolute [x0, y0, x1, y1] clipped to the image (float32)."""
    xc, yc, w, h = box
    x0, x1 = (xc - w / 2) * width, (xc + w / 2) * width
    y0, y1 = (yc - h / 2) * height, (yc + h / 2) * height
    xyxy = np.array([x0, y0, x1, y1], dtype=np.float64)
    xyxy[[0, 2]] = xyxy[[0, 2]].clip(0, width)
    xyxy[[1, 3]] = xyxy[[1, 3]].clip(0, height)
    return xyxy.astype(np.float32)


def read_yolo_labels(
    path: str, width: int, height: int, num_classes: int, min_size: float = MIN_BOX_PIXELS, iscrowd: int = 0,
) -> tuple[list[dict], int]:
    """Read a label file into Detectron2 annotations with absolute XYXY boxes.

    Returns (annotations, number of degenerate boxes dropped). A box narrower or lower than
    ``min_size`` pixels after clipping to the (width, height) image is degenerate. A line's
    occlusion level, when given, is the annotation's ``occlusion``; ``iscrowd=1`` marks every box
    as an ignore region (an ``ignore/<stem>.txt`` file).
    """
    from detectron2.structures import BoxMode

    annotations, dropped = [], 0
    lines = read_lines(path, "label")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cls, box, occlusion = parse_label_line(path, lineno, line, num_classes)
        xyxy = yolo_to_xyxy(box, width, height)
        if xyxy[2] - xyxy[0] < min_size or xyxy[3] - xyxy[1] < min_size:
            dropped += 1
            continue
        anno = {"bbox": xyxy.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": cls, "iscrowd": iscrowd}
        if occlusion is not None:
            anno["occlusion"] = occlusion
        annotations.append(anno)
    return annotations, dropped
