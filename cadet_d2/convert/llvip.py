"""LLVIP: ``visible/{train,test}/<stem>.jpg``, ``infrared/{train,test}/<stem>.jpg``,
VOC XML ``Annotations/<stem>.xml``; one class, person. A pair without an XML file is written
unlabeled (the public test images of some copies come without boxes)."""
from __future__ import annotations

import os

from ..data.errors import DataError
from .report import Report
from .voc import voc_pair
from .writer import images_by_stem, make_pair, match_pairs

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
        pairs = []
        for stem, rgb_path, thermal_path in match_pairs(rgb, thermal, report, split):
            pair = make_pair(report, stem, rgb_path, thermal_path)
            if pair is None:
                continue
            ann = os.path.join(ann_dir, stem + ".xml")
            pair.boxes, pair.ignore = voc_pair(report, ann, ann, pair.width, pair.height, index, boxes_outside)
            if pair.boxes is None:
                report.note(f"{split}: no annotation file (pair written unlabeled)", stem)
            else:
                used.add(stem)
            pairs.append(pair)
        sets[split] = pairs
    if os.path.isdir(ann_dir):
        for name in sorted(os.listdir(ann_dir)):
            if name.endswith(".xml") and name[:-4] not in used:
                report.note("annotation file without an image pair (not used)", os.path.join(ann_dir, name))
    return CLASSES, sets
