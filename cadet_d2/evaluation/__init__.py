from .coco import METRICS, box_metrics, build_coco_evaluator, format_table, write_metrics

__all__ = ["METRICS", "box_metrics", "build_coco_evaluator", "format_table", "write_metrics"]
