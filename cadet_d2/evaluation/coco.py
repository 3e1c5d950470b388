"""COCO box evaluation of every test set (plus KAIST's miss rate when configured), and the metrics
table / JSON."""
from __future__ import annotations

import logging
import math
import os

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm
from tabulate import tabulate

from ..utils.io import atomic_write_json
from .curves import CURVES_FOLDER
from .miss_rate import TASK as MISS_RATE_TASK
from .miss_rate import MissRateEvaluator

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
    _point_metadata_at(dataset_name, json_file)
    return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir, use_fast_impl=False)


def _point_metadata_at(dataset_name: str, json_file: str) -> None:
    """Set the set's ``json_file`` metadata (which COCOEvaluator reads) to ``json_file``. A
    metadata field cannot take a second value, and a later run in the process may write its JSON
    to another folder: the set's metadata is then re-created with every other field kept."""
    meta = MetadataCatalog.get(dataset_name)
    if getattr(meta, "json_file", json_file) != json_file:
        fields = {k: v for k, v in meta.as_dict().items() if k not in ("name", "json_file")}
        MetadataCatalog.remove(dataset_name)
        MetadataCatalog.get(dataset_name).set(**fields)
    MetadataCatalog.get(dataset_name).json_file = json_file


def build_evaluator(cfg, dataset_name: str, output_dir: str | None = None) -> DatasetEvaluator:
    """The evaluator of a test set: COCO box AP (:func:`build_coco_evaluator`), plus KAIST's
    log-average miss rate (:class:`MissRateEvaluator`) when ``CADET.TEST.MISS_RATE.ENABLED``, its
    curves in ``output_dir`` (default ``OUTPUT_DIR/miss_rate``, beside the metrics file)."""
    coco = build_coco_evaluator(cfg, dataset_name, output_dir)
    if not cfg.CADET.TEST.MISS_RATE.ENABLED:
        return coco
    curves = output_dir or os.path.join(cfg.OUTPUT_DIR, CURVES_FOLDER)  # <curves>/<dataset>.json, .png
    return DatasetEvaluators([coco, MissRateEvaluator(cfg, dataset_name, output_dir=curves)])


def box_metrics(results: dict) -> dict[str, dict[str, float]]:
    """{dataset: {"bbox": {...}, "miss_rate": {...}}} from DefaultTrainer.test -> {dataset: {metric: value}}
    (COCO's metrics, then the miss rates when evaluated)."""
    return {name: {**r.get("bbox", {}), **r.get(MISS_RATE_TASK, {})} for name, r in results.items()}


def no_detections_as_zero(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """COCOEvaluator reports NaN for every metric when a model makes no detection at all ("No
    predictions from the model!"); its AP is then 0 (logged as a warning naming the set). Only
    COCO's metrics change (the miss rate of no detection is already 100). A set without any
    ground-truth box has no COCO metrics at all: its row stays empty (nan) and is warned about."""
    def fixed(name: str, m: dict[str, float]) -> dict[str, float]:
        coco = [k for k in m if k in METRICS]
        if not coco:
            logger.warning(f"[cadet] {name}: no COCO AP (the set has no ground-truth box): its row shows nan")
        elif all(math.isnan(m[k]) for k in coco):
            logger.warning(f"[cadet] {name}: the model made no detection: COCO AP counted as 0")
            return {k: 0.0 if k in METRICS else v for k, v in m.items()}
        return m

    return {ds: fixed(ds, m) for ds, m in metrics.items()}


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per data set, columns AP AP50 AP75 APs APm APl, then any other
    metric of the sets (the miss rates "MR-2 reasonable", "MR-2 near", ..., in %, lower is better)."""
    extra = [k for k in dict.fromkeys(k for m in metrics.values() for k in m) if k not in METRICS]
    columns = [*METRICS, *extra]
    rows = [[name] + [m.get(k, float("nan")) for k in columns] for name, m in metrics.items()]
    return tabulate(rows, headers=["dataset", *columns], tablefmt="pipe", floatfmt=".2f")


def write_metrics(path: str, metrics: dict[str, dict[str, float]], **extra) -> None:
    """Write metrics (NaN as null, also inside ``extra``) atomically as JSON: {"datasets": {...}, **extra}."""
    atomic_write_json(path, _nan_to_none({"datasets": metrics, **extra}))


def _nan_to_none(x):
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x
