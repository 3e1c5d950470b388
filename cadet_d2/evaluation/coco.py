"""COCO box evaluation of every test set, and the metrics table / JSON."""
from __future__ import annotations

import logging
import math
import os

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from ..utils.io import atomic_write_json

logger = logging.getLogger(__name__)
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def build_coco_evaluator(cfg, dataset_name: str, output_dir: str | None = None) -> COCOEvaluator:
    """A COCOEvaluator (boxes) whose ground-truth JSON is written afresh for this run.

    Uses pycocotools' evaluation (``use_fast_impl=False``): the fast path needs Detectron2's
    compiled ops, which the PyPI build does not have.
    """
    output_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    json_file = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
    if comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        convert_to_coco_json(dataset_name, json_file, allow_cached=False)
    comm.synchronize()
    # Metadata attributes cannot be overwritten with .set(); a new run may use a new folder.
    MetadataCatalog.get(dataset_name).__dict__.pop("json_file", None)
    MetadataCatalog.get(dataset_name).json_file = json_file
    return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir, use_fast_impl=False)


def box_metrics(results: dict) -> dict[str, dict[str, float]]:
    """{dataset: {"bbox": {...}}} from DefaultTrainer.test -> {dataset: {metric: value}}."""
    return {name: dict(r.get("bbox", {})) for name, r in results.items()}


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per data set, columns AP AP50 AP75 APs APm APl."""
    rows = [[name] + [m.get(k, float("nan")) for k in METRICS] for name, m in metrics.items()]
    return tabulate(rows, headers=["dataset", *METRICS], tablefmt="pipe", floatfmt=".2f")


def write_metrics(path: str, metrics: dict[str, dict[str, float]], **extra) -> None:
    """Write metrics (NaN as null, also inside ``extra``) atomically as JSON: {"datasets": {...}, **extra}."""
    atomic_write_json(path, _nan_to_none({"datasets": metrics, **extra}))


def _nan_to_none(x):
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x
