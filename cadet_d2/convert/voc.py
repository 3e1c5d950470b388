"""Pascal VOC XML annotation files (LLVIP, FLIR's VOC layout, M3FD)."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Optional

from ..data.errors import DataError


@dataclass
class VocObject:
    name: str
    x0: float
    y0: float
    x1: float
    y1: float
    difficult: bool = False


def read_voc(path: str) -> Optional[tuple[Optional[tuple[int, int]], list[VocObject]]]:
    """(size (width, height) from ``<size>`` or None, objects) of a VOC file; None for an empty
    file (no bytes or only white space). A file that is not XML, or an object without a number
    in ``bndbox/xmin..ymax``, raises DataError naming the file (and line where XML says it)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(path, f"unreadable annotation file: {e}") from None
    if not data.strip():
        return None
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise DataError(path, f"not valid XML: {e}", e.position[0]) from None
    size = None
    w, h = root.findtext("size/width"), root.findtext("size/height")
    try:
        if w and h and int(float(w)) > 0 and int(float(h)) > 0:
            size = (int(float(w)), int(float(h)))
    except ValueError:
        raise DataError(path, f"<size> is not numeric: width {w!r}, height {h!r}") from None
    objects = []
    for i, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        coords = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            text = obj.findtext(f"bndbox/{key}")
            try:
                coords.append(float(text))
            except (TypeError, ValueError):
                raise DataError(path, f"object {i} ({name or 'no name'}): bndbox/{key} is {text!r}, not a number") \
                    from None
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append(VocObject(name, *coords, difficult=difficult))
    return size, objects


def voc_pair(report, where: str, ann_path: str, width: int, height: int, class_index: dict[str, int],
             policy: str):
    """(boxes, ignore) of a pair from its VOC file, or (None, []) when there is no file.

    ``class_index`` maps a lower-case VOC name to a class id; other names are dropped and counted.
    An empty file gives a labeled image without objects (counted). A ``<size>`` that is not the
    image's is counted; boxes are in pixels of the image, whatever ``<size>`` says.
    """
    from .writer import fit_box

    if not os.path.isfile(ann_path):
        return None, []
    parsed = read_voc(ann_path)
    if parsed is None:
        report.note("empty annotation file (kept as an image without objects)", ann_path)
        return [], []
    size, objects = parsed
    if size is not None and size != (width, height):
        report.note("annotation <size> differs from the image size (image size used)", ann_path)
    boxes = []
    for o in objects:
        cls = class_index.get(o.name.lower())
        if cls is None:
            report.note(f"box of unknown class {o.name!r} dropped", ann_path)
            continue
        box = fit_box(report, ann_path, cls, o.x0, o.y0, o.x1, o.y1, width, height, policy)
        if box is not None:
            boxes.append(box)
    return boxes, []
