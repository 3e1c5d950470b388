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
    A ``<difficult>1</difficult>`` object is an ignore region (counted), as VOC's evaluation
    neither rewards nor penalises it.
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
    boxes, ignore = [], []
    for o in objects:
        cls = class_index.get(o.name.lower())
        if cls is None:
            report.note(f"box of unknown class {o.name!r} dropped", ann_path)
            continue
        box = fit_box(report, ann_path, cls, o.x0, o.y0, o.x1, o.y1, width, height, policy)
        if box is None:
            continue
        if o.difficult:
            report.note("difficult box stored as ignore region", ann_path)
            ignore.append(box)
        else:
            boxes.append(box)
    return boxes, ignore


def voc_folder_pairs(report, rgb: dict[str, str], thermal: dict[str, str], ann_dir: str, class_index: dict[str, int],
                     boxes_outside: str, where: str) -> list:
    """The pairs of two ``{stem: image}`` folders with their boxes from ``ann_dir/<stem>.xml``
    (LLVIP, M3FD); a pair without an XML file is kept unlabeled and noted (``where``: the split)."""
    from .writer import make_pair, match_pairs

    pairs = []
    for stem, rgb_path, thermal_path in match_pairs(rgb, thermal, report, where):
        pair = make_pair(report, stem, rgb_path, thermal_path)
        if pair is None:
            continue
        ann = os.path.join(ann_dir, stem + ".xml")
        pair.boxes, pair.ignore = voc_pair(report, ann, ann, pair.width, pair.height, class_index, boxes_outside)
        if pair.boxes is None:
            report.note(f"{where}: no annotation file (pair written unlabeled)", stem)
        pairs.append(pair)
    return pairs


def note_unused_annotations(report, ann_dir: str, used) -> None:
    """Note every ``ann_dir/*.xml`` whose stem is not in ``used`` (no image pair for it)."""
    if os.path.isdir(ann_dir):
        for name in sorted(os.listdir(ann_dir)):
            if name.endswith(".xml") and name[:-4] not in used:
                report.note("annotation file without an image pair (not used)", os.path.join(ann_dir, name))
