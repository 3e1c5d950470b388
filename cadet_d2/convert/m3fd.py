"""M3FD: ``M3FD_Detection/{Vis,Ir}/<stem>.png`` and VOC XML ``M3FD_Detection/Annotation/<stem>.xml``.

Six classes in this fixed order (class ids 0-5): People, Car, Bus, Lamp, Motorcycle, Truck.
M3FD has no official split: the pairs are split by :func:`seeded_split` (sorted stems permuted
with ``seed``; the first ``round(n * test_fraction)`` are ``test``, the rest ``train``).
"""
from __future__ import annotations

import os

import numpy as np

from ..data.errors import DataError
from .report import Report
from .voc import note_unused_annotations, voc_folder_pairs
from .writer import images_by_stem

CLASSES = ["People", "Car", "Bus", "Lamp", "Motorcycle", "Truck"]


def seeded_split(stems: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, test) stems: sorted stems permuted by ``np.random.RandomState(seed)``, the first
    ``round(n * test_fraction)`` held out (the rule of cadet_d2.data.split_stems)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"--test-fraction {test_fraction} must lie in [0, 1)")
    ordered = sorted(stems)
    perm = np.random.RandomState(seed).permutation(len(ordered))
    n_test = int(round(len(ordered) * test_fraction))
    return sorted(ordered[i] for i in perm[n_test:]), sorted(ordered[i] for i in perm[:n_test])


def convert_m3fd(src: str, report: Report, boxes_outside: str = "clip", test_fraction: float = 0.2,
                 seed: int = 42) -> tuple[list[str], dict]:
    """(classes, {"train": [Pair], "test": [Pair]}) of an M3FD tree (``src`` is the folder
    holding M3FD_Detection/ or M3FD_Detection/ itself)."""
    root = os.path.join(src, "M3FD_Detection") if os.path.isdir(os.path.join(src, "M3FD_Detection")) else src
    if not os.path.isdir(os.path.join(root, "Vis")) or not os.path.isdir(os.path.join(root, "Ir")):
        raise DataError(src, "not an M3FD tree: expected M3FD_Detection/{Vis,Ir,Annotation}/")
    ann_dir = os.path.join(root, "Annotation")
    index = {c.lower(): i for i, c in enumerate(CLASSES)}
    rgb = images_by_stem(os.path.join(root, "Vis"), report)
    thermal = images_by_stem(os.path.join(root, "Ir"), report)
    pairs = {p.stem: p for p in voc_folder_pairs(report, rgb, thermal, ann_dir, index, boxes_outside, "M3FD")}
    note_unused_annotations(report, ann_dir, pairs)
    train, test = seeded_split(list(pairs), test_fraction, seed)
    report.info.append(f"  split: seeded, test fraction {test_fraction}, seed {seed}: "
                       f"{len(train)} train, {len(test)} test")
    return CLASSES, {"train": [pairs[s] for s in train], "test": [pairs[s] for s in test]}
