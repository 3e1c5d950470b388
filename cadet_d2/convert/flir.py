"""FLIR-aligned, in either of its two published layouts; classes person, bike, car.

COCO layout (``layout="coco"``)::

    images_rgb_<split>/data/FLIR_<id>_RGB.jpg
    images_thermal_<split>/data/FLIR_<id>_PreviewData.jpg
    meta/thermal/flir_<split>.json           COCO boxes on the thermal image, string image ids
    meta/thermal/{day,night}_flir_<split>.json   optional day / night parts of the split

VOC layout (``layout="voc"``)::

    JPEGImages/FLIR_<id>_PreviewData.jpeg, JPEGImages/FLIR_<id>_RGB.jpg
    Annotations/FLIR_<id>_PreviewData.xml    (or FLIR_<id>.xml)
    align_train.txt, align_validation.txt    one id per line (FLIR_<id>, with or without suffix)
    optional day / night id lists: align_<split>_{day,night}.txt or {day,night}_align_<split>.txt

Split ``train`` is the set ``train``; ``val``, ``validation`` and ``test`` are the set ``test``;
each day / night part becomes ``<set>_day`` / ``<set>_night``. Stems are ``FLIR_<id>``. Boxes
are those of the thermal image and normalised to its size; the aligned RGB image has the same
size (a size difference is counted). COCO boxes with ``iscrowd`` or ``ignore`` set are ignore regions. ``bicycle`` is read as
``bike``; other category names are dropped and counted.
"""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict

from ..data.errors import DataError
from .report import Report
from .voc import voc_pair
from .writer import IMAGE_EXTS, fit_box, make_pair

CLASSES = ["person", "bike", "car"]
ALIASES = {"bicycle": "bike"}
SET_OF_SPLIT = {"train": "train", "val": "test", "validation": "test", "test": "test"}
LAYOUTS = ("auto", "coco", "voc")
ID_RE = re.compile(r"(FLIR_\d+)(?:_(?:PreviewData|RGB))?(?:\.\w+)?")


def _class_index() -> dict[str, int]:
    index = {c: i for i, c in enumerate(CLASSES)}
    index.update({a: index[c] for a, c in ALIASES.items()})
    return index


def detect_layout(src: str) -> str:
    if os.path.isdir(os.path.join(src, "meta", "thermal")):
        return "coco"
    if os.path.isdir(os.path.join(src, "JPEGImages")):
        return "voc"
    raise DataError(src, "not a FLIR-aligned tree: expected meta/thermal/flir_<split>.json (COCO layout) "
                         "or JPEGImages/ + Annotations/ + align_<split>.txt (VOC layout)")


def convert_flir(src: str, report: Report, boxes_outside: str = "clip", layout: str = "auto") -> tuple[list[str], dict]:
    """(classes, {set: [Pair]}) of a FLIR-aligned tree."""
    if layout not in LAYOUTS:
        raise ValueError(f"FLIR layout {layout!r}: choose from {LAYOUTS}")
    layout = detect_layout(src) if layout == "auto" else layout
    report.info.append(f"  layout: {layout}")
    return CLASSES, (_convert_coco(src, report, boxes_outside) if layout == "coco"
                     else _convert_voc(src, report, boxes_outside))


def _set_name(split: str) -> str:
    return SET_OF_SPLIT.get(split, split)


# ---- COCO layout -----------------------------------------------------------------------------

def read_coco(path: str) -> dict:
    """A COCO JSON file with ``images``, ``annotations`` and ``categories`` lists (DataError
    naming the file, and the line for a syntax error, otherwise)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg} (column {e.colno})", e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"unreadable JSON file: {e}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(path, f"no {key!r} list (expected a COCO detection file)")
    return data


def _find_rgb(folder: str, thermal_name: str) -> str | None:
    base = os.path.splitext(thermal_name)[0]
    base = base[:-len("_PreviewData")] if base.endswith("_PreviewData") else base
    for ext in IMAGE_EXTS:
        path = os.path.join(folder, base + "_RGB" + ext)
        if os.path.isfile(path):
            return path
    return None


def _coco_pairs(src: str, split: str, json_path: str, report: Report, policy: str) -> list:
    data = read_coco(json_path)
    index = _class_index()
    cat_names = {}
    for c in data["categories"]:
        cat_names[c.get("id")] = str(c.get("name", ""))
    by_image = defaultdict(list)
    image_ids = {im.get("id") for im in data["images"]}
    for n, a in enumerate(data["annotations"]):
        if a.get("image_id") not in image_ids:
            report.note("annotation of an image the JSON does not list (not used)", f"{json_path} annotation {n}")
            continue
        by_image[a.get("image_id")].append((n, a))
    thermal_dir = os.path.join(src, f"images_thermal_{split}", "data")
    rgb_dir = os.path.join(src, f"images_rgb_{split}", "data")
    pairs = []
    for im in data["images"]:
        name = os.path.basename(str(im.get("file_name", "")))
        m = ID_RE.fullmatch(name)
        stem = m.group(1) if m else os.path.splitext(name)[0]
        thermal = os.path.join(thermal_dir, name)
        if not os.path.isfile(thermal):
            report.skip("missing thermal image", thermal)
            continue
        rgb = _find_rgb(rgb_dir, name)
        if rgb is None:
            report.skip("missing RGB image", f"{rgb_dir}/{stem}_RGB.*")
            continue
        pair = make_pair(report, stem, rgb, thermal, annotated="thermal")
        if pair is None:
            continue
        pair.boxes = []
        for n, a in by_image[im.get("id")]:
            where = f"{json_path} annotation {n} (image {im.get('id')})"
            bbox = a.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                raise DataError(json_path, f"annotation {n} (image {im.get('id')}): bbox {bbox!r} is not [x, y, w, h]")
            name_ = cat_names.get(a.get("category_id"), f"category id {a.get('category_id')}")
            cls = index.get(name_.lower())
            if cls is None:
                report.note(f"box of unknown class {name_!r} dropped", where)
                continue
            x, y, w, h = (float(v) for v in bbox)
            box = fit_box(report, where, cls, x, y, x + w, y + h, pair.width, pair.height, policy)
            if box is None:
                continue
            if a.get("iscrowd") or a.get("ignore"):
                report.note("iscrowd/ignore box stored as ignore region", where)
                pair.ignore.append(box)
            else:
                pair.boxes.append(box)
        if not pair.boxes and not pair.ignore:
            report.note(f"{split}: image without boxes in the JSON (labeled, no objects)", stem)
        pairs.append(pair)
    return pairs


def _convert_coco(src: str, report: Report, policy: str) -> dict:
    meta = os.path.join(src, "meta", "thermal")
    sets = {}
    names = sorted(os.listdir(meta)) if os.path.isdir(meta) else []
    splits = [m.group(1) for m in (re.fullmatch(r"flir_(\w+)\.json", n) for n in names) if m]
    if not splits:
        raise DataError(meta, "no flir_<split>.json file")
    for split in splits:
        set_name = _set_name(split)
        if set_name in sets:
            raise DataError(os.path.join(meta, f"flir_{split}.json"), f"a second split for the set {set_name!r}")
        sets[set_name] = _coco_pairs(src, split, os.path.join(meta, f"flir_{split}.json"), report, policy)
        in_split = {p.stem for p in sets[set_name]}
        for part in ("day", "night"):
            path = os.path.join(meta, f"{part}_flir_{split}.json")
            if os.path.isfile(path):
                part_pairs = _coco_pairs(src, split, path, report, policy)
                for p in part_pairs:  # a day/night set is a part of its split, as in the VOC layout
                    if p.stem not in in_split:
                        report.note(f"image of {part}_flir_{split}.json not in flir_{split}.json (not used)", p.stem)
                sets[f"{set_name}_{part}"] = [p for p in part_pairs if p.stem in in_split]
    return sets


# ---- VOC layout ------------------------------------------------------------------------------

def read_id_list(path: str) -> list[str]:
    """``FLIR_<id>`` per line of an id list (any of FLIR_<id>, FLIR_<id>_PreviewData, ..._RGB,
    with or without extension); DataError naming file and line for anything else."""
    ids = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = os.path.basename(line.strip())
            if not text:
                continue
            m = ID_RE.fullmatch(text)
            if m is None:
                raise DataError(path, f"expected an id like FLIR_08865, got {text!r}", lineno)
            ids.append(m.group(1))
    return ids


def _voc_pairs(src: str, ids: list[str], report: Report, policy: str) -> list:
    image_dir, ann_dir = os.path.join(src, "JPEGImages"), os.path.join(src, "Annotations")
    index = _class_index()
    pairs = []
    for stem in ids:
        found = {}
        for kind, suffix in (("thermal", "_PreviewData"), ("rgb", "_RGB")):
            found[kind] = next((os.path.join(image_dir, stem + suffix + e) for e in IMAGE_EXTS
                                if os.path.isfile(os.path.join(image_dir, stem + suffix + e))), None)
        if found["thermal"] is None:
            report.skip("missing thermal image", f"{image_dir}/{stem}_PreviewData.*")
            continue
        if found["rgb"] is None:
            report.skip("missing RGB image", f"{image_dir}/{stem}_RGB.*")
            continue
        pair = make_pair(report, stem, found["rgb"], found["thermal"], annotated="thermal")
        if pair is None:
            continue
        ann = next((os.path.join(ann_dir, n) for n in (stem + "_PreviewData.xml", stem + ".xml")
                    if os.path.isfile(os.path.join(ann_dir, n))), os.path.join(ann_dir, stem + "_PreviewData.xml"))
        pair.boxes, pair.ignore = voc_pair(report, ann, ann, pair.width, pair.height, index, policy)
        if pair.boxes is None:
            report.note("no annotation file (pair written unlabeled)", ann)
        pairs.append(pair)
    return pairs


def _convert_voc(src: str, report: Report, policy: str) -> dict:
    names = sorted(os.listdir(src))
    splits = [m.group(1) for m in (re.fullmatch(r"align_(\w+?)\.txt", n) for n in names) if m]
    splits = [s for s in splits if not s.endswith(("_day", "_night"))]
    if not splits:
        raise DataError(src, "no align_<split>.txt id list (VOC layout of FLIR-aligned)")
    sets = {}
    for split in splits:
        set_name = _set_name(split)
        if set_name in sets:
            raise DataError(os.path.join(src, f"align_{split}.txt"), f"a second split for the set {set_name!r}")
        ids = read_id_list(os.path.join(src, f"align_{split}.txt"))
        seen, unique = set(), []
        for i in ids:
            if i in seen:
                report.skip("duplicate stem (second file not used)", f"align_{split}.txt {i}")
            else:
                seen.add(i)
                unique.append(i)
        sets[set_name] = pairs = _voc_pairs(src, unique, report, policy)
        by_stem = {p.stem: p for p in pairs}
        for part in ("day", "night"):
            for name in (f"align_{split}_{part}.txt", f"{part}_align_{split}.txt"):
                path = os.path.join(src, name)
                if os.path.isfile(path):
                    part_ids = read_id_list(path)
                    for i in part_ids:
                        if i not in seen:
                            report.note(f"id of {name} not in align_{split}.txt (not used)", i)
                    sets[f"{set_name}_{part}"] = [by_stem[i] for i in dict.fromkeys(part_ids) if i in by_stem]
                    break
    return sets
