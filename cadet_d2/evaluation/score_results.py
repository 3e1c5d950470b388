"""Scoring results files (:mod:`cadet_d2.evaluation.results_files`) against a registered test set
with the evaluators of a training run: each file's detections are fed, image by image, as model
outputs (Instances) to :func:`~cadet_d2.evaluation.coco.build_evaluator`'s COCO + miss-rate
evaluators, so a file gets exactly the numbers a model with those outputs would.
"""
from __future__ import annotations

import os

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from .coco import box_metrics, build_evaluator, no_detections_as_zero
from .curves import draw_curves, main_setting, read_curves
from .miss_rate import resolve_class
from .results_files import read_results


def as_outputs(records: list[dict], predictions: dict, class_id: int):
    """(inputs, outputs) pairs, one per record: ``{"image_id", "height", "width"}`` and
    ``{"instances": Instances}`` of its detections (boxes (D, 4) XYXY, scores (D,), class ``class_id``)."""
    for r in records:
        boxes, scores = predictions[r["image_id"]]
        inst = Instances((int(r["height"]), int(r["width"])))
        inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.as_tensor(scores, dtype=torch.float32)
        inst.pred_classes = torch.full((len(scores),), class_id, dtype=torch.int64)
        yield {"image_id": r["image_id"], "height": r["height"], "width": r["width"]}, {"instances": inst}


def score_file(cfg, dataset: str, path: str, out_dir: str) -> tuple[dict, str]:
    """({metric: value} of ``path``'s detections on ``dataset``: COCO AP, then MR^-2 of each
    setting when ``CADET.TEST.MISS_RATE.ENABLED``; the curves JSON written under ``out_dir``, or "")."""
    records = sorted(DatasetCatalog.get(dataset), key=lambda r: r.get("stem", r["file_name"]))
    thing_classes = MetadataCatalog.get(dataset).get("thing_classes", [])
    class_id = resolve_class(cfg.CADET.TEST.MISS_RATE.CLASS, thing_classes, dataset)
    predictions = read_results(path, records, thing_classes[class_id], class_id + 1)
    evaluator = build_evaluator(cfg, dataset, out_dir)
    evaluator.reset()
    for inp, out in as_outputs(records, predictions, class_id):
        evaluator.process([inp], [out])
    results = evaluator.evaluate()
    metrics = no_detections_as_zero(box_metrics({dataset: results}))[dataset]
    curves = os.path.join(out_dir, f"{dataset}.json")
    return metrics, curves if cfg.CADET.TEST.MISS_RATE.ENABLED and os.path.isfile(curves) else ""


def draw_files(curves: list[tuple[str, str]], path: str, title: str) -> bool:
    """One figure of the main setting's curve of each (label, curves JSON)."""
    series = []
    for label, json_path in curves:
        settings = read_curves(json_path)
        main = main_setting(settings)
        if main is not None:
            series.append((f"{label} {main}", settings[main]))
    return draw_curves(series, path, title)
