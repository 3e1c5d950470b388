"""The data root every converter writes, and the helpers they share.

Layout (read by :mod:`cadet_d2.data`)::

    OUT/classes.txt                one class name per line (class id = line number from 0)
    OUT/<set>/pairs.csv            header ``stem,rgb,thermal``; absolute source paths (or, with
                                   ``relative=True``, paths relative to OUT/<set>); nothing is copied
    OUT/<set>/labels/<stem>.txt    YOLO ``class cx cy w h`` normalised to the pair's image size
                                   (the image the boxes were drawn on; the same size for aligned pairs)
                                   (KAIST adds a 6th column, the occlusion level 0/1/2); an empty
                                   file = labeled, no objects; no file = unlabeled
    OUT/<set>/ignore/<stem>.txt    ignore regions, same 5-column format (read as iscrowd=1)
    OUT/<set>/bbgt/<stem>.txt      KAIST only: the frame's bbGt annotation file as it is, from which
                                   the miss-rate evaluation picks its ground truth (cadet_d2/data/bbgt.py)
    OUT/convert_report.json        the :class:`~cadet_d2.convert.report.Report`

With ``to_npy=True`` ``OUT/<set>/images/<stem>.npy`` (H x W x 4 uint8: R, G, B, thermal) replace
pairs.csv; train with ``CADET.INPUT.FILE_CHANNELS 4`` and MODALITIES [rgb, thermal].
"""
from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, field
from typing import Optional

from ..data.bbgt import BBGT_FOLDER
from ..data.errors import DataError
from ..data.images import image_size as header_size
from .report import Report

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
BOX_POLICIES = ("clip", "drop")


@dataclass
class Box:
    """An absolute XYXY box in pixels of the pair's image; ``occlusion`` only for KAIST."""

    cls: int
    x0: float
    y0: float
    x1: float
    y1: float
    occlusion: Optional[int] = None


@dataclass
class Pair:
    """One RGB-thermal pair. ``boxes is None``: no annotation file (written unlabeled)."""

    stem: str
    rgb: str
    thermal: str
    width: int
    height: int
    boxes: Optional[list] = None
    ignore: list = field(default_factory=list)
    annotation: str = ""  # a source annotation file copied to <set>/bbgt/<stem>.txt ("" = none)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header; DataError naming the file when unreadable or
    truncated (:func:`cadet_d2.data.images.image_size`)."""
    height, width = header_size(path)
    return width, height


def images_by_stem(folder: str, report: Report, suffix: str = "") -> dict[str, str]:
    """``stem -> path`` of the images in ``folder`` whose name ends with ``suffix`` + extension
    (the suffix is cut from the stem). Two files with one stem (``a.jpg``, ``a.png``): the first
    in sorted order is kept, the other counted as a duplicate stem."""
    out: dict[str, str] = {}
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        base, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTS or not base.endswith(suffix):
            continue
        stem = base[:len(base) - len(suffix)] if suffix else base
        path = os.path.join(folder, name)
        if stem in out:
            report.skip("duplicate stem (second file not used)", path)
            continue
        out[stem] = path
    return out


def make_pair(report: Report, stem: str, rgb: str, thermal: str, annotated: str = "rgb") -> Optional[Pair]:
    """A :class:`Pair` sized by the image its boxes were drawn on (``annotated``: "rgb", or
    "thermal" for FLIR), or None (counted) when an image is unreadable. A thermal image of
    another size is counted (the reader resizes it to the RGB size or stops, by config; labels
    normalised to the annotated image stay right either way)."""
    try:
        width, height = image_size(rgb)
        t_size = image_size(thermal)
    except DataError as e:
        report.skip("unreadable image", str(e))
        return None
    if t_size != (width, height):
        report.note("thermal size differs from the RGB size", f"{thermal} {t_size[0]}x{t_size[1]} vs {width}x{height}")
    if annotated == "thermal":
        width, height = t_size
    return Pair(stem, rgb, thermal, width, height)


def match_pairs(rgb: dict[str, str], thermal: dict[str, str], report: Report, where: str) -> list[tuple[str, str, str]]:
    """(stem, rgb path, thermal path) for stems in both; the others are counted as skipped."""
    for stem in sorted(set(rgb) - set(thermal)):
        report.skip("missing thermal image", f"{where}/{stem}")
    for stem in sorted(set(thermal) - set(rgb)):
        report.skip("missing RGB image", f"{where}/{stem}")
    return [(s, rgb[s], thermal[s]) for s in sorted(set(rgb) & set(thermal))]


def fit_box(report: Report, where: str, cls: int, x0: float, y0: float, x1: float, y1: float,
            width: int, height: int, policy: str = "clip", occlusion: Optional[int] = None) -> Optional[Box]:
    """The box inside a (width, height) image, or None when it is dropped (and counted).

    A box with no area is dropped; a box reaching outside the image is clipped to it
    (``policy="clip"``; dropped when nothing is left) or dropped (``"drop"``).
    """
    if not x1 > x0 or not y1 > y0:
        report.note("box with no area dropped", where)
        return None
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        if policy == "drop":
            report.note("box outside the image dropped", where)
            return None
        x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
        y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
        if not (x1 > x0 and y1 > y0):
            report.note("box wholly outside the image dropped", where)
            return None
        report.note("box outside the image clipped", where)
    return Box(cls, float(x0), float(y0), float(x1), float(y1), occlusion)


def yolo_line(box: Box, width: int, height: int, with_occlusion: bool = False) -> str:
    """``class cx cy w h`` normalised to the image (6 decimals), plus the occlusion level."""
    cx, cy = (box.x0 + box.x1) / 2 / width, (box.y0 + box.y1) / 2 / height
    w, h = (box.x1 - box.x0) / width, (box.y1 - box.y0) / height
    line = f"{box.cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
    if with_occlusion:
        line += f" {box.occlusion if box.occlusion is not None else 0}"
    return line


def _prepare_out(out: str, overwrite: bool) -> None:
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose a new --out or pass --overwrite")
        if not os.path.isfile(os.path.join(out, "convert_report.json")):
            raise FileExistsError(
                f"{out} is not empty and holds no convert_report.json: not a converted root, so --overwrite "
                "does not delete it; choose a new --out")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def _write_lines(path: str, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def write_root(out: str, classes: list[str], sets: dict[str, list[Pair]], report: Report, *,
               occlusion: bool = False, to_npy: bool = False, relative: bool = False,
               overwrite: bool = False) -> None:
    """Write ``sets`` (set name -> pairs; empty sets are left out) under ``out``, fill the report's
    per-set counts and save it as ``out/convert_report.json``."""
    _prepare_out(out, overwrite)
    _write_lines(os.path.join(out, "classes.txt"), classes)
    for name, pairs in sets.items():
        if not pairs:
            report.info.append(f"  {name}: no pairs, folder not written")
            continue
        folder = os.path.join(out, name)
        for sub in ("labels", "ignore") + (("images",) if to_npy else ()):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        stats = {"pairs": len(pairs), "labeled": 0, "unlabeled": 0, "without_objects": 0,
                 "boxes": {c: 0 for c in classes}, "ignore_boxes": 0}
        rows, seen = [], set()
        for p in pairs:
            if p.stem in seen:
                report.skip("duplicate stem (second file not used)", f"{name}/{p.stem}")
                stats["pairs"] -= 1
                continue
            seen.add(p.stem)
            if to_npy:
                from .npy import write_npy_pair

                write_npy_pair(os.path.join(folder, "images", p.stem + ".npy"), p, report)
            else:
                rgb, thermal = os.path.abspath(p.rgb), os.path.abspath(p.thermal)
                if relative:
                    rgb, thermal = (os.path.relpath(x, os.path.abspath(folder)) for x in (rgb, thermal))
                rows.append((p.stem, rgb, thermal))
            if p.boxes is None:
                stats["unlabeled"] += 1
            else:
                stats["labeled"] += 1
                stats["without_objects"] += not p.boxes
                for b in p.boxes:
                    stats["boxes"][classes[b.cls]] += 1
                _write_lines(os.path.join(folder, "labels", p.stem + ".txt"),
                             [yolo_line(b, p.width, p.height, occlusion) for b in p.boxes])
            if p.annotation:
                os.makedirs(os.path.join(folder, BBGT_FOLDER), exist_ok=True)
                shutil.copyfile(p.annotation, os.path.join(folder, BBGT_FOLDER, p.stem + ".txt"))
            if p.ignore:
                stats["ignore_boxes"] += len(p.ignore)
                _write_lines(os.path.join(folder, "ignore", p.stem + ".txt"),
                             [yolo_line(b, p.width, p.height) for b in p.ignore])
        if not to_npy:
            with open(os.path.join(folder, "pairs.csv"), "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(("stem", "rgb", "thermal"))
                w.writerows(rows)
        if not os.listdir(os.path.join(folder, "ignore")):
            os.rmdir(os.path.join(folder, "ignore"))
        report.sets[name] = stats
    report.save(os.path.join(out, "convert_report.json"))
