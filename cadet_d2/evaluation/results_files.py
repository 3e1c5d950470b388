"""Detections that did not come from this project, read as predictions of a registered test set.

Three formats (:func:`read_results` tells them apart):

* KAIST's text file (``frame, x, y, w, h, score`` per line, comma separated; ``frame`` 1-based in
  the order of the set's stems, boxes as the annotations give them: the file the public KAIST
  evaluation scripts and MBNet's released results use);
* a folder of per-frame files ``<stem>.txt`` (``person x1 y1 x2 y2 score`` per line, 0-based, as
  KAIST devkit users write them): read as the devkit's aggregation rewrites them, ``x1 + 1, y1 + 1,
  x2 - x1, y2 - y1`` rounded to 4 decimals and the score to 8; a frame without a file has no
  detections;
* a COCO results JSON (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``, the ids of
  the set's dataset dicts and of its COCO JSON, as Detectron2's COCOEvaluator writes them).

Each gives ``{image_id: (boxes (D, 4) XYXY_ABS float64, scores (D,))}`` with an entry for every
record of the set. A frame the set does not have, a malformed line or entry: :class:`DataError`
naming the file and line (entry).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from ..data.errors import DataError


def _empty(records: list[dict]) -> dict:
    return {r["image_id"]: [] for r in records}


def _finish(rows: dict) -> dict:
    return {i: (np.asarray([b for b, _ in v], dtype=np.float64).reshape(-1, 4),
                np.asarray([s for _, s in v], dtype=np.float64)) for i, v in rows.items()}


def _numbers(path: str, lineno: int, fields: list[str], what: str) -> list[float]:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise DataError(path, f"non-numeric field in {what!r}", lineno) from None
    if not all(math.isfinite(v) for v in values):
        raise DataError(path, f"NaN or infinite value in {what!r}", lineno)
    return values


def _box(path: str, where: int, x: float, y: float, w: float, h: float, line: str) -> list[float]:
    if w < 0 or h < 0:
        raise DataError(path, f"negative width or height in {line!r}", where)
    return [x, y, x + w, y + h]


def read_kaist_text(path: str, records: list[dict]) -> dict:
    """KAIST's ``frame, x, y, w, h, score`` file; frame ``k`` is ``records[k - 1]`` (records in
    the set's stem order)."""
    rows = _empty(records)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            fields = [v.strip() for v in text.split(",")]
            if len(fields) != 6:
                raise DataError(path, f"expected 'frame, x, y, w, h, score', got {text!r}", lineno)
            frame, x, y, w, h, score = _numbers(path, lineno, fields, text)
            if frame != int(frame) or not 1 <= frame <= len(records):
                raise DataError(path, f"frame {fields[0]} is not one of the set's frames 1..{len(records)}", lineno)
            rows[records[int(frame) - 1]["image_id"]].append((_box(path, lineno, x, y, w, h, text), score))
    return _finish(rows)


def read_frame_files(folder: str, records: list[dict], class_name: str) -> dict:
    """A folder of ``<stem>.txt`` files, ``<class_name> x1 y1 x2 y2 score`` per line (0-based: 1 is
    added to every coordinate)."""
    by_stem = {r.get("stem"): r["image_id"] for r in records}
    rows = _empty(records)
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith(".txt") or not os.path.isfile(path):
            continue
        if name[:-4] not in by_stem:
            raise DataError(path, f"frame {name[:-4]!r} is not in the set ({len(records)} frames)")
        image_id = by_stem[name[:-4]]
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 6:
                    raise DataError(path, f"expected '{class_name} x1 y1 x2 y2 score', got {line.strip()!r}", lineno)
                if fields[0] != class_name:
                    raise DataError(path, f"label {fields[0]!r} is not the evaluated class {class_name!r}", lineno)
                x1, y1, x2, y2, score = _numbers(path, lineno, fields[1:], line.strip())
                if x2 < x1 or y2 < y1:
                    raise DataError(path, f"x2 < x1 or y2 < y1 in {line.strip()!r}", lineno)
                # as the devkit's aggregation prints them: x1 + 1, y1 + 1, x2 - x1, y2 - y1 (%.4f), score (%.8f)
                x, y, w, h = (float(f"{v:.4f}") for v in (x1 + 1, y1 + 1, x2 - x1, y2 - y1))
                rows[image_id].append(([x, y, x + w, y + h], float(f"{score:.8f}")))
    return _finish(rows)


def read_coco_results(path: str, records: list[dict], category_id: int) -> dict:
    """A COCO results JSON; entries of other categories than ``category_id`` (the data set's id
    of the evaluated class) are left out. Errors name the entry (0-based) as the line."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"not a readable JSON file: {e}") from None
    if not isinstance(entries, list):
        raise DataError(path, "a COCO results file is a JSON list of {image_id, category_id, bbox, score}")
    rows = _empty(records)
    for k, e in enumerate(entries):
        try:
            image_id, cat, bbox, score = e["image_id"], e["category_id"], e["bbox"], e["score"]
            x, y, w, h = _numbers(path, k, [str(v) for v in bbox], str(bbox))
            score = float(score)
        except (KeyError, TypeError, ValueError):
            raise DataError(path, f"entry {k} is not {{image_id, category_id, bbox: [x, y, w, h], score}}: "
                            f"{str(e)[:120]}", k) from None
        if image_id not in rows:
            raise DataError(path, f"entry {k}: image_id {image_id!r} is not in the set", k)
        if cat == category_id:
            rows[image_id].append((_box(path, k, x, y, w, h, str(bbox)), score))
    return _finish(rows)


def read_results(path: str, records: list[dict], class_name: str, category_id: int) -> dict:
    """The detections of ``path`` (a folder: per-frame files; ``*.json``: COCO results; else KAIST's
    text file) for ``records``, the set's dataset dicts in stem order."""
    if os.path.isdir(path):
        return read_frame_files(path, records, class_name)
    if not os.path.isfile(path):
        raise DataError(path, "results file not found")
    if path.lower().endswith(".json"):
        return read_coco_results(path, records, category_id)
    return read_kaist_text(path, records)
