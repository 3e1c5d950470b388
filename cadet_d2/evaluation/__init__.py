from .coco import METRICS, box_metrics, build_coco_evaluator, format_table, write_metrics
from .robustness import CLEAN, condition_table, evaluate_conditions

__all__ = ["CLEAN", "METRICS", "box_metrics", "build_coco_evaluator", "condition_table", "evaluate_conditions",
           "format_table", "write_metrics"]
