"""Which ground truth counts in each miss-rate setting: the KAIST devkit's nine settings
(``kaist_eval_full.m`` with ``bbGt.m``'s ``bbLoad`` filters) and the frames each covers.

An image's ground truth is an :class:`Objects`: every box of the evaluated class or of an ignore
label, with its occlusion level and ignore flag, read from the set's bbGt copies
(``<set>/bbgt/<stem>.txt``, :mod:`cadet_d2.data.bbgt`) when it has them, else from the dataset
dicts (``iscrowd`` 1 = flagged ignore, ``occlusion`` missing = 0). :func:`ignore_flags` applies a
setting to it, as ``bbLoad`` does: a box is an ignore region when its label is an ignore label,
its flag is set, its height is outside the setting's range, its occlusion is not one of the
setting's levels, or a side lies outside ``[BORDER, size - BORDER]``. Detections are never
filtered. Boxes are XYWH in the annotation's pixels.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from detectron2.structures import BoxMode

from ..data.bbgt import BORDER, IGNORE_LABELS, frame_time, read_bbgt
from ..layout import MISS_RATE_SETTINGS, OCCLUSION_LEVELS


@dataclass(frozen=True)
class Setting:
    """Heights ``height`` (inclusive, px), occlusion levels counted, frames (``"day"`` / ``"night"``:
    the set's KAIST frames of that time only; ``""``: every frame), and whether the border counts."""

    name: str
    height: tuple[float, float]
    occlusion: tuple[int, ...]
    frames: str = ""
    border: bool = True

    @property
    def metric(self) -> str:
        return f"MR-2 {self.name}"


REASONABLE = ((55.0, math.inf), (0, 1))
#: The KAIST devkit's nine settings, then "all" (no height, occlusion or border limit; not a devkit setting).
SETTINGS = {s.name: s for s in (
    Setting("reasonable", *REASONABLE),
    Setting("reasonable-day", *REASONABLE, frames="day"),
    Setting("reasonable-night", *REASONABLE, frames="night"),
    Setting("near", (115.0, math.inf), (0,)),
    Setting("medium", (45.0, 115.0), (0,)),
    Setting("far", (1.0, 45.0), (0,)),
    Setting("occ-none", (1.0, math.inf), (0,)),
    Setting("occ-partial", (1.0, math.inf), (1,)),
    Setting("occ-heavy", (1.0, math.inf), (2,)),
    Setting("all", (0.0, math.inf), OCCLUSION_LEVELS, border=False),
)}
assert tuple(SETTINGS) == MISS_RATE_SETTINGS


@dataclass
class Objects:
    """One image's ground truth: boxes (G, 4) XYWH; labelled (G,) bool, True for the evaluated
    class, False for an ignore label; flagged (G,) bool, the file's ign flag / ``iscrowd``;
    occlusion (G,) int; the image's (width, height)."""

    boxes: np.ndarray
    labelled: np.ndarray
    flagged: np.ndarray
    occlusion: np.ndarray
    size: tuple[int, int]


def _objects(rows: list[tuple], size: tuple[int, int]) -> Objects:
    """rows: (x, y, w, h, labelled, flagged, occlusion)."""
    arr = np.asarray([r[:4] for r in rows], dtype=np.float64).reshape(-1, 4)
    return Objects(arr, np.array([r[4] for r in rows], dtype=bool), np.array([r[5] for r in rows], dtype=bool),
                   np.array([r[6] for r in rows], dtype=np.int64), size)


def objects_from_bbgt(path: str, class_name: str, size: tuple[int, int]) -> Objects:
    """The boxes of a bbGt file labelled ``class_name`` or an ignore label (others are left out, as
    ``bbLoad`` with ``lbls``/``ilbls`` does)."""
    rows = [(x, y, w, h, label == class_name, ign, occ) for label, x, y, w, h, occ, ign, _ in (read_bbgt(path) or [])
            if label == class_name or label in IGNORE_LABELS]
    return _objects(rows, size)


def objects_from_annotations(annotations: list[dict], class_id: int, size: tuple[int, int], where: str = "") -> Objects:
    """Dataset-dict annotations of ``class_id`` and every ``iscrowd`` one (any class, flagged)."""
    rows = []
    for a in annotations:
        crowd = bool(a.get("iscrowd", 0))
        if a["category_id"] != class_id and not crowd:
            continue
        occ = a.get("occlusion", 0)
        if occ not in OCCLUSION_LEVELS:
            raise ValueError(f"{where}: annotation occlusion = {occ!r}; expected one of {OCCLUSION_LEVELS} "
                             "(0 none, 1 partial, 2 heavy)")
        box = BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYWH_ABS)
        rows.append((*box, True, crowd, occ))
    return _objects(rows, size)


def record_objects(record: dict, class_id: int, class_name: str, bbgt_dir: str = "") -> Objects:
    """The ground truth of a dataset dict: its bbGt copy in ``bbgt_dir`` when that folder is given
    (a frame without a file there has none), else its annotations."""
    size = (int(record.get("width", 0)), int(record.get("height", 0)))
    if bbgt_dir:
        path = os.path.join(bbgt_dir, record["stem"] + ".txt")
        return objects_from_bbgt(path, class_name, size) if os.path.isfile(path) else _objects([], size)
    return objects_from_annotations(record.get("annotations", []), class_id, size, record.get("file_name", ""))


def ignore_flags(obj: Objects, setting: Setting) -> np.ndarray:
    """(G,) bool: the boxes that are ignore regions in ``setting`` (the others must be found)."""
    return ignore_per_image([obj], (setting,))[0][0]


def ignore_per_image(objects: list[Objects], settings: tuple[Setting, ...]) -> list[np.ndarray]:
    """:func:`ignore_flags` of every image in every setting, computed over all images at once:
    per image, (S, G) bool."""
    n = [len(o.boxes) for o in objects]
    if not objects or not sum(n):
        return [np.zeros((len(settings), k), dtype=bool) for k in n]
    boxes = np.concatenate([o.boxes for o in objects])
    x, y, w, h = boxes.T
    width, height = (np.repeat([float(o.size[i]) for o in objects], n) for i in (0, 1))
    base = ~np.concatenate([o.labelled for o in objects]) | np.concatenate([o.flagged for o in objects])
    occlusion = np.concatenate([o.occlusion for o in objects])
    outside = np.zeros(len(boxes), dtype=bool)
    for lo, hi, limit in ((x, x + w, width), (y, y + h, height)):
        for v in (lo, hi):
            outside |= (v < BORDER) | (v > limit - BORDER)
    table = np.empty((len(settings), len(boxes)), dtype=bool)
    for k, s in enumerate(settings):
        table[k] = base | (h < s.height[0]) | (h > s.height[1]) | ~np.isin(occlusion, s.occlusion)
        if s.border:
            table[k] |= outside
    return np.split(table, np.cumsum(n)[:-1], axis=1)


def frames_of(setting: Setting, stems: list[str]) -> np.ndarray | None:
    """(N,) bool: which of the set's frames ``setting`` covers; None when it has no meaning there
    (a day / night setting on a set that does not hold both day and night KAIST frames: it would
    repeat "reasonable" or be empty)."""
    if not setting.frames:
        return np.ones(len(stems), dtype=bool)
    times = np.array([frame_time(s) for s in stems])
    if not ((times == "day").any() and (times == "night").any()):
        return None
    return times == setting.frames
