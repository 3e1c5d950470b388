from .datasets import list_stems, load_cadet_dicts, read_classes, register_cadet_dataset, register_from_config, split_stems
from .errors import DataError
from .mapper import MultiModalDatasetMapper
from .npy import load_image, read_image_size
from .yolo import parse_yolo_line, read_yolo_labels, yolo_to_xyxy

__all__ = [
    "DataError", "MultiModalDatasetMapper", "list_stems", "load_cadet_dicts", "load_image", "parse_yolo_line",
    "read_classes", "read_image_size", "read_yolo_labels", "register_cadet_dataset", "register_from_config",
    "split_stems", "yolo_to_xyxy",
]
