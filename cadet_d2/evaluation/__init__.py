from .coco import (METRICS, box_metrics, build_coco_evaluator, build_evaluator, format_table, no_detections_as_zero,
                   write_metrics)
from .miss_rate import MissRateEvaluator
from .robustness import CLEAN, condition_table, evaluate_conditions

__all__ = ["CLEAN", "METRICS", "MissRateEvaluator", "box_metrics", "build_coco_evaluator", "build_evaluator",
           "condition_table", "evaluate_conditions", "format_table", "write_metrics"]
