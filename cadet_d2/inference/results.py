"""Predictions as COCO-style detection results (a JSON list, one entry per box)."""
from __future__ import annotations

import json
from typing import Sequence

from ..utils.io import atomic_write_bytes
from .predictor import Prediction


def to_coco_results(predictions: Sequence[Prediction | None], class_names: Sequence[str] = ()) -> list[dict]:
    """One dict per detection, in image then score order::

        {"image_id": i, "file_name": path, "category_id": class + 1, "bbox": [x, y, w, h],
         "score": s, "category_name": name}

    ``image_id``: the image's position in ``predictions`` (0-based; None, a skipped input,
    gives no entry and keeps the ids of the others); ``category_id``: the
    contiguous class index + 1, the ids of the COCO files cadet_d2's data sets convert to
    (``thing_dataset_id_to_contiguous_id = {i + 1: i}``); ``bbox``: COCO XYWH in pixels of the
    original image; ``category_name`` only when ``class_names`` is given.
    """
    results = []
    for image_id, p in enumerate(predictions):
        if p is None:
            continue
        for (x0, y0, x1, y1), score, cls in zip(p.boxes.tolist(), p.scores.tolist(), p.classes.tolist()):
            entry = {"image_id": image_id, "file_name": p.file_name, "category_id": int(cls) + 1,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
            if class_names:
                entry["category_name"] = class_names[cls]
            results.append(entry)
    return results


def write_coco_results(path: str, predictions: Sequence[Prediction | None],
                       class_names: Sequence[str] = ()) -> list[dict]:
    """Write :func:`to_coco_results` to ``path`` atomically (a reader never sees half a file)."""
    results = to_coco_results(predictions, class_names)
    atomic_write_bytes(path, (json.dumps(results) + "\n").encode("utf-8"))
    return results
