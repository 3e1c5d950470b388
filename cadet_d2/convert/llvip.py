"""LLVIP: ``visible/{train,test}/<stem>.jpg``, ``infrared/{train,test}/<stem>.jpg``,
VOC XML ``Annotations/<stem>.xml``; one class, person. A pair without an XML file is written
unlabeled (the public test images of some copies come without boxes)."""
from __future__ import annotations

import os

from ..data.errors import DataError
from .report import Report
from .voc import note_unused_annotations, voc_folder_pairs
from .writer import images_by_stem

CLASSES = ["person"]
SPLITS = ("train", "test")


def convert_llvip(src: str, report: Report, boxes_outside: str = "clip") -> tuple[list[str], dict]:
    """(classes, {set: [Pair]}) of an LLVIP tree."""
    if not os.path.isdir(os.path.join(src, "visible")) or not os.path.isdir(os.path.join(src, "infrared")):
        raise DataError(src, "not an LLVIP tree: expected visible/{train,test}/ and infrared/{train,test}/")
    ann_dir = os.path.join(src, "Annotations")
    index = {"person": 0}
    sets, used = {}, set()
    for split in SPLITS:
        rgb = images_by_stem(os.path.join(src, "visible", split), report)
        thermal = images_by_stem(os.path.join(src, "infrared", split), report)
        if not rgb and not thermal:
            report.info.append(f"  {split}: no visible/{split} or infrared/{split} images")
            continue
        pairs = voc_folder_pairs(report, rgb, thermal, ann_dir, index, boxes_outside, split)
        used.update(p.stem for p in pairs if p.boxes is not None)
        sets[split] = pairs
    note_unused_annotations(report, ann_dir, used)
    return CLASSES, sets
