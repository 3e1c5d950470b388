"""Pictures of a registered data set's ground truth, as stored or after the training mapper."""
from __future__ import annotations

import logging
import os

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..layout import modality_slices
from ..data.datasets import register_from_config
from ..data.mapper import MultiModalDatasetMapper
from .visualize import save_detections

logger = logging.getLogger("cadet_d2")
IGNORE_LABEL = "ignore"  # how an ignore region (iscrowd 1) is labelled in a picture


def stored_ground_truth(cfg: CfgNode, d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (H, W, C) in model channel order, boxes (N, 4) XYXY pixels, classes (N,)) of a
    dataset dict, as stored."""
    image = MultiModalDatasetMapper(cfg, False).load_original(d)
    annos = d.get("annotations", [])
    boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
                     dtype=np.float32).reshape(-1, 4)
    return image, boxes, np.array([a["category_id"] for a in annos], dtype=np.int64)


def _ignore_labeled(d: dict, classes: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """(classes (N,), names) with which an ignore region (``iscrowd`` 1) of ``d`` is drawn as
    "ignore" instead of its class: it is neither trained on nor a miss in evaluation."""
    crowd = np.array([bool(a.get("iscrowd")) for a in d.get("annotations", [])], dtype=bool)
    if not crowd.any():
        return classes, names
    n = max(len(names), int(classes.max()) + 1)
    labels = [names[c] if c < len(names) else str(c) for c in range(n)] + [IGNORE_LABEL]
    return np.where(crowd, n, classes), labels


def augmented_ground_truth(mapper: MultiModalDatasetMapper, d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same after a training mapper: the augmented image (h, w, C) and its transformed boxes."""
    out = mapper(d)
    inst = out["instances"]
    image = out["image"].permute(1, 2, 0).numpy()
    return image, inst.gt_boxes.tensor.numpy().astype(np.float32), inst.gt_classes.numpy().astype(np.int64)


def draw_dataset(cfg: CfgNode, dataset: str, output_dir: str, num: int = 8, train_aug: bool = False,
                 seed: int | None = 0) -> list[str]:
    """Write ``output_dir/<stem>.png`` (``<stem>_aug.png`` with ``train_aug``) for the first
    ``num`` images of ``dataset`` (all when ``num`` <= 0) with their ground-truth boxes.

    The data sets of ``cfg.CADET.DATA`` are registered first. ``train_aug`` runs the training
    mapper (``MultiModalDatasetMapper(cfg, is_train=True)``: resize, flip, RGB jitter) and draws
    the transformed boxes on the augmented image; ``seed`` seeds numpy's global RNG, which
    Detectron2's augmentations draw from. Returns the written paths.
    """
    register_from_config(cfg)
    if dataset not in DatasetCatalog.list():
        known = sorted(n for n in DatasetCatalog.list() if n.startswith(cfg.CADET.DATA.NAME + "_"))
        raise KeyError(f"data set {dataset!r} is not registered; the config registers {known}")
    dicts = DatasetCatalog.get(dataset)
    dicts = dicts[:num] if num > 0 else dicts
    names = list(MetadataCatalog.get(dataset).get("thing_classes", []))
    mapper = MultiModalDatasetMapper(cfg, is_train=True) if train_aug else None
    if train_aug and seed is not None:
        np.random.seed(seed)
    slices = modality_slices(cfg)
    written = []
    for d in dicts:
        if mapper:  # the training mapper drops ignore regions, as training does
            image, boxes, classes = augmented_ground_truth(mapper, d)
            labels = names
        else:
            image, boxes, classes = stored_ground_truth(cfg, d)
            classes, labels = _ignore_labeled(d, classes, names)
        stem = d.get("stem") or os.path.splitext(os.path.basename(d["file_name"]))[0]
        path = os.path.join(output_dir, f"{stem}{'_aug' if train_aug else ''}.png")
        save_detections(path, image, slices, boxes, classes, None, labels)
        written.append(path)
    logger.info(f"[cadet] {dataset}: {len(written)} ground-truth pictures in {output_dir}")
    return written
