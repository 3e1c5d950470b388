"""Sensor-failure evaluation: AP of every test set under each ``CADET.TEST`` condition.

``evaluate_conditions(cfg, model)`` re-runs inference on ``DATASETS.TEST`` once per condition of
:func:`cadet_d2.data.corrupt.conditions_from_config` (a modality group zeroed, noised or frozen in every
image) and returns ``{condition: {dataset: {metric: value}}}``. ``condition_table`` makes their
table: a row per condition (the clean run first), AP and AP50 per data set.
"""
from __future__ import annotations

import logging
import os

from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm
from tabulate import tabulate
from torch import nn

from ..data.corrupt import Condition, conditions_from_config
from ..data.mapper import MultiModalDatasetMapper
from ..data.workers import WorkerSafeLoader
from .coco import box_metrics, build_evaluator, no_detections_as_zero

logger = logging.getLogger(__name__)
CLEAN = "clean"


def evaluate_condition(cfg, model: nn.Module, condition: Condition) -> dict[str, dict[str, float]]:
    """{dataset: metrics} of ``model`` on every ``DATASETS.TEST`` set under ``condition``."""
    results = {}
    for name in cfg.DATASETS.TEST:
        frozen = DatasetCatalog.get(name)[0] if condition.mode == "frozen" else None  # its first dataset dict
        mapper = MultiModalDatasetMapper(cfg, False, condition=condition, frozen_file=frozen)
        loader = WorkerSafeLoader(build_detection_test_loader(cfg, name, mapper=mapper),
                                  cfg.CADET.CHECKPOINT.STOP_SIGNALS)
        folder = f"drop_{condition.group.replace('+', '_')}_{condition.mode}"
        evaluator = build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference", folder, name))
        results[name] = inference_on_dataset(model, loader, evaluator)
    return no_detections_as_zero(box_metrics(results)) if comm.is_main_process() else {}


def evaluate_conditions(cfg, model: nn.Module) -> dict[str, dict[str, dict[str, float]]]:
    """{condition name: {dataset: metrics}} for every condition of ``CADET.TEST`` (no clean row)."""
    out = {}
    for condition in conditions_from_config(cfg):
        logger.info(f"[cadet] sensor failure: evaluating with {condition.name}")
        out[condition.name] = evaluate_condition(cfg, model, condition)
    return out


def condition_table(per_condition: dict[str, dict[str, dict[str, float]]],
                    metrics: tuple[str, ...] = ("AP", "AP50")) -> str:
    """Markdown: one row per condition, columns ``<dataset> <metric>``; missing values as nan."""
    datasets = list(dict.fromkeys(d for per_set in per_condition.values() for d in per_set))
    headers = ["condition"] + [f"{d} {m}" for d in datasets for m in metrics]
    rows = [[cond] + [per_set.get(d, {}).get(m, float("nan")) for d in datasets for m in metrics]
            for cond, per_set in per_condition.items()]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f")
