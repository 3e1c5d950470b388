"""KAIST multispectral pedestrians: ``setXX/VYYY/{visible,lwir}/I#####.{jpg,png}`` and bbGt text
annotations ``setXX/VYYY/I#####.txt`` (``% bbGt version=3``, then one object per line:
``label left top width height occlusion vl vt vw vh ign angle``; the visible box ``vl..vh``, the
ignore flag ``ign`` and ``angle`` may be missing).

Accepted trees: images under ``SRC/images/`` or ``SRC/`` itself; annotations under
``--annotations DIR``, else ``SRC/annotations/``, else beside the images. Sets 00-05 are
``train``, 06-11 ``test``, 06-08 also ``test_day`` and 09-11 ``test_night``. Stems are
``setXX_VYYY_I#####``.

Labels and ignore regions follow KAIST's evaluation (the "reasonable" setting of its
bbGt-based scripts: ``lbls person``, ``ilbls people person? cyclist``, ``hRng [55 inf]``,
``vType none partial``, ``xRng [5 635]``, ``yRng [5 507]`` for 640 x 512 frames):

* ``person`` boxes are class 0 labels with the occlusion level (0 none, 1 partial, 2 heavy) as
  a 6th column;
* ``people``, ``cyclist`` and ``person?`` boxes are ignore regions, and so is every box whose
  ``ign`` flag (11th field) is 1, as the toolbox reads it;
* with ``setting="reasonable"`` (default), a ``person`` box lower than 55 px, heavily occluded,
  or not inside [5, W - 5] x [5, H - 5] is an ignore region too (so it is neither a miss nor a
  false positive in evaluation, and not trained on); ``setting="all"`` keeps every ``person``.

The setting decides what is trained on. Each frame's bbGt file is also copied as it is to
``<set>/bbgt/<stem>.txt`` (:mod:`cadet_d2.data.bbgt`), and the miss rate picks its ground truth
from that copy, so its numbers do not depend on the setting.
"""
from __future__ import annotations

import os
import re

from ..data.bbgt import BORDER, DAY_TEST_SETS, IGNORE_LABELS, NIGHT_TEST_SETS, read_bbgt
from ..data.errors import DataError
from .report import Report
from .writer import fit_box, images_by_stem, make_pair, match_pairs

CLASSES = ["person"]
TRAIN_SETS = tuple(f"set{i:02d}" for i in range(0, 6))
MIN_HEIGHT = 55
SETTINGS = ("reasonable", "all")


def read_frame_list(path: str) -> set[str]:
    """Frames of a KAIST image-set file (``set06/V000/I00019`` per line) as stems."""
    frames = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            m = re.fullmatch(r"(set\d\d)[/_\\](V\d\d\d)[/_\\](I\d{5})(\.\w+)?", text)
            if m is None:
                raise DataError(path, f"expected a frame like set06/V000/I00019, got {text!r}", lineno)
            frames.add(f"{m.group(1)}_{m.group(2)}_{m.group(3)}")
    return frames


def _frames(image_root: str, report: Report):
    """(set, stem, rgb path, thermal path) of every frame with both images, in sorted order."""
    for set_name in sorted(d for d in os.listdir(image_root) if re.fullmatch(r"set\d\d", d)):
        set_dir = os.path.join(image_root, set_name)
        for video in sorted(d for d in os.listdir(set_dir) if re.fullmatch(r"V\d\d\d", d)):
            vdir = os.path.join(set_dir, video)
            rgb = images_by_stem(os.path.join(vdir, "visible"), report)
            thermal = images_by_stem(os.path.join(vdir, "lwir"), report)
            for frame, rgb_path, thermal_path in match_pairs(rgb, thermal, report, f"{set_name}/{video}"):
                yield set_name, f"{set_name}_{video}_{frame}", rgb_path, thermal_path


def convert_kaist(src: str, report: Report, boxes_outside: str = "clip", annotations: str = "",
                  setting: str = "reasonable", train_list: str = "", test_list: str = "") -> tuple[list[str], dict]:
    """(classes, {train, test, test_day, test_night: [Pair]}) of a KAIST tree; ``train_list`` /
    ``test_list`` (image-set files) keep only the frames they name."""
    if setting not in SETTINGS:
        raise ValueError(f"KAIST setting {setting!r}: choose from {SETTINGS}")
    image_root = os.path.join(src, "images") if os.path.isdir(os.path.join(src, "images")) else src
    ann_root = annotations or (os.path.join(src, "annotations") if os.path.isdir(os.path.join(src, "annotations"))
                               else image_root)
    if not os.path.isdir(image_root) or not any(re.fullmatch(r"set\d\d", d) for d in os.listdir(image_root)):
        raise DataError(src, "not a KAIST tree: expected setXX/VYYY/{visible,lwir}/ (or images/setXX/...)")
    if annotations and not os.path.isdir(annotations):
        raise DataError(annotations, "--annotations folder not found")
    lists = {"train": read_frame_list(train_list) if train_list else None,
             "test": read_frame_list(test_list) if test_list else None}
    sets = {"train": [], "test": [], "test_day": [], "test_night": []}
    found = set()
    for set_name, stem, rgb_path, thermal_path in _frames(image_root, report):
        split = "train" if set_name in TRAIN_SETS else "test"
        if lists[split] is not None and stem not in lists[split]:
            continue
        found.add(stem)
        pair = make_pair(report, stem, rgb_path, thermal_path)
        if pair is None:
            continue
        _, video, frame = stem.split("_")
        ann = os.path.join(ann_root, set_name, video, frame + ".txt")
        if os.path.isfile(ann):
            pair.boxes, pair.ignore = _boxes(report, ann, pair.width, pair.height, boxes_outside, setting)
            pair.annotation = ann  # the evaluation's ground truth, whatever the setting
        elif os.path.isfile(ann[:-4] + ".xml"):
            raise DataError(ann[:-4] + ".xml", "a VOC-style XML annotation (e.g. annotations-xml-new of the "
                            "kaist-cvpr15 release): the KAIST converter reads the bbGt text files of KAIST's "
                            "annotations.tar (setXX/VYYY/I#####.txt); give their folder with --annotations")
        else:
            report.note("no annotation file (pair written unlabeled)", ann)
        sets[split].append(pair)
        if set_name in DAY_TEST_SETS:
            sets["test_day"].append(pair)
        elif set_name in NIGHT_TEST_SETS:
            sets["test_night"].append(pair)
    for split, frames in lists.items():
        for stem in sorted((frames or set()) - found):
            report.skip(f"frame of the {split} list not found", stem)
    report.info.append(f"  setting: {setting} (person boxes outside it are ignore regions)"
                       if setting == "reasonable" else "  setting: all (every person box is a label)")
    return CLASSES, sets


def _boxes(report: Report, ann: str, width: int, height: int, policy: str, setting: str):
    objects = read_bbgt(ann)
    if objects is None:
        report.note("empty annotation file (kept as an image without objects)", ann)
        objects = []
    boxes, ignore = [], []
    for label, left, top, w, h, occ, ign, lineno in objects:
        where = f"{ann}:{lineno}"
        if label not in ("person",) + IGNORE_LABELS:
            report.note(f"box of unknown label {label!r} dropped", where)
            continue
        box = fit_box(report, where, 0, left, top, left + w, top + h, width, height, policy, occ)
        if box is None:
            continue
        if label != "person":
            report.note(f"{label} box stored as ignore region", where)
            ignore.append(box)
        elif ign:
            report.note("person box with ign flag 1 stored as ignore region", where)
            ignore.append(box)
        elif setting == "reasonable" and not _reasonable(left, top, w, h, occ, width, height):
            report.note("person outside the reasonable setting stored as ignore region", where)
            ignore.append(box)
        else:
            boxes.append(box)
    return boxes, ignore


def _reasonable(left: float, top: float, w: float, h: float, occ: int, width: int, height: int) -> bool:
    """KAIST's reasonable subset: height >= 55 px, occlusion none/partial, inside the border."""
    inside = left >= BORDER and top >= BORDER and left + w <= width - BORDER and top + h <= height - BORDER
    return h >= MIN_HEIGHT and occ < 2 and inside
