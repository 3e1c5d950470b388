"""KAIST's bbGt annotation files (``% bbGt version=3``, then ``label left top width height
occlusion vl vt vw vh ign angle`` per object, 1-based pixel boxes) and the facts of the KAIST
devkit that both the converter and the miss-rate evaluation use.

A converted KAIST set keeps a verbatim copy of each frame's bbGt file in ``<set>/bbgt/<stem>.txt``
(:data:`BBGT_FOLDER`): the evaluation chooses its ground truth from those (label, unclipped box,
occlusion, ign flag) as the devkit does, whatever the converter made ignore regions for training.
"""
from __future__ import annotations

import re

from .errors import DataError, read_lines

BBGT_FOLDER = "bbgt"  # <set>/bbgt/<stem>.txt: the frame's annotation file, copied as it is
IGNORE_LABELS = ("people", "cyclist", "person?")  # the devkit's ilbls
BORDER = 5  # the devkit's xRng [5 635] / yRng [5 507] on 640 x 512 frames: [BORDER, size - BORDER]
DAY_TEST_SETS = ("set06", "set07", "set08")
NIGHT_TEST_SETS = ("set09", "set10", "set11")


def frame_time(stem: str) -> str:
    """"day" or "night" for a KAIST test stem (``setXX_VYYY_I#####``: sets 06-08 are day, 09-11
    night), "" for any other stem."""
    m = re.match(r"(set\d\d)_", stem)
    name = m.group(1) if m else ""
    return "day" if name in DAY_TEST_SETS else "night" if name in NIGHT_TEST_SETS else ""


def read_bbgt(path: str) -> list[tuple[str, float, float, float, float, int, bool, int]] | None:
    """(label, left, top, width, height, occlusion, ign, line number) per object of a bbGt file;
    ``ign`` is the 11th field (False when the line is shorter).

    An empty file (no bytes or only white space) gives None. A first line that is not ``% bbGt version=...``, a line with fewer
    than 6 fields, a non-numeric field, an occlusion level outside 0-2 or an ``ign`` flag other
    than 0/1 raises DataError naming the file and line.
    """
    lines = read_lines(path, "annotation")
    if not any(line.strip() for line in lines):
        return None
    if not lines[0].startswith("% bbGt"):
        raise DataError(path, f"first line {lines[0]!r} is not a '% bbGt version=3' header", 1)
    out = []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 6:
            raise DataError(path, f"expected 'label left top width height occlusion ...', got {line!r}", lineno)
        try:
            left, top, width, height = (float(v) for v in fields[1:5])
            occ = int(float(fields[5]))
        except ValueError:
            raise DataError(path, f"non-numeric box or occlusion in {line!r}", lineno) from None
        if occ not in (0, 1, 2):
            raise DataError(path, f"occlusion level {fields[5]} is not 0, 1 or 2", lineno)
        try:
            ign = float(fields[10]) if len(fields) > 10 else 0.0
        except ValueError:
            ign = None
        if ign not in (0.0, 1.0):
            raise DataError(path, f"ign flag (11th field) {fields[10]!r} is not 0 or 1", lineno)
        out.append((fields[0], left, top, width, height, occ, ign == 1.0, lineno))
    return out
