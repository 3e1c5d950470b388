"""Do two runtimes give the same detections? Greedy IoU matching of boxes of the same class."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from .runtime import Detections


def match_detections(ref: Detections, other: Detections, min_iou: float = 0.99) -> dict:
    """Match each detection of ``ref`` (by descending score) to the unmatched detection of
    ``other`` of the same class with the highest IoU, if that IoU is >= ``min_iou``.

    Returns ``count_ref``, ``count_other``, ``matched`` (pairs), ``min_iou`` (lowest IoU of the
    matched pairs, 1.0 when none), ``max_score_diff`` (largest |score difference| of the pairs)
    and ``same`` (same count and every detection matched).
    """
    n, m = len(ref.scores), len(other.scores)
    pairs: list[tuple[int, int, float]] = []
    if n and m:
        iou = box_iou(torch.from_numpy(ref.boxes).double(), torch.from_numpy(other.boxes).double()).numpy()
        iou[ref.classes[:, None] != other.classes[None, :]] = -1.0
        free = np.ones(m, dtype=bool)
        for i in np.argsort(-ref.scores, kind="stable"):
            cand = np.where(free, iou[i], -1.0)
            j = int(np.argmax(cand))
            if cand[j] >= min_iou:
                free[j] = False
                pairs.append((int(i), j, float(cand[j])))
    diffs = [abs(float(ref.scores[i]) - float(other.scores[j])) for i, j, _ in pairs]
    return {
        "count_ref": n, "count_other": m, "matched": len(pairs),
        "min_iou": min((p[2] for p in pairs), default=1.0), "max_score_diff": max(diffs, default=0.0),
        "same": n == m == len(pairs),
    }
