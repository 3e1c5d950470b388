"""Checks of the registered data sets before any training, so that a set that cannot be
evaluated stops the run in seconds, not after hours of training.

:func:`check_datasets` (called by ``cadet_d2.engine.setup.setup``):

* every ``DATASETS.TRAIN`` (when training) and ``DATASETS.TEST`` name is registered;
* each of those sets has ``MODEL.ROI_HEADS.NUM_CLASSES`` classes (``CADET.DATA.CLASSES`` or the
  root's ``classes.txt``): a head of another size would train labels of the last class as
  background, or unused outputs, without a sign;
* every training set (when training) has at least one image: a set whose every image was
  skipped (no label files, or bad files with ``CADET.DATA.ON_ERROR skip``) stops with its folder,
  its label folder and what to do, instead of Detectron2's "Dataset ... is empty!" assertion;
* every test set has at least one image: a set whose images have no label files stops with its
  folder and what to do (add labels, set ``CADET.DATA.UNLABELED negative``, or drop it from
  ``DATASETS.TEST``);
* a test set without any box (e.g. ``UNLABELED negative`` on unlabeled images) is evaluated as
  images without objects; COCO AP is undefined there (Detectron2's COCOEvaluator computes none,
  the metrics table shows nan), which is logged as a warning naming the set before training.
"""
from __future__ import annotations

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)


class DatasetCheckError(ValueError):
    """A data set named in the config cannot be used (message: the set, its folder, what to do)."""


def _folder(name: str) -> str:
    return getattr(MetadataCatalog.get(name), "cadet_root", "?")


def _labels(name: str) -> str:
    return os.path.join(getattr(MetadataCatalog.get(name), "cadet_labels", "labels"), "<stem>.txt")


def _of_root(cfg) -> list[str]:
    """Registered names of ``CADET.DATA.NAME`` whose folder lies in ``CADET.DATA.ROOT``."""
    root = os.path.abspath(cfg.CADET.DATA.ROOT)
    return sorted(n for n in DatasetCatalog.list() if n.startswith(cfg.CADET.DATA.NAME + "_")
                  and os.path.abspath(_folder(n)).startswith(root))


def check_datasets(cfg, train: bool = True) -> None:
    """Raise :class:`DatasetCheckError` unless every set of ``DATASETS.TEST`` (and, with
    ``train``, ``DATASETS.TRAIN``) is registered, and every test set has images."""
    registered = DatasetCatalog.list()
    names = (list(cfg.DATASETS.TRAIN) if train else []) + list(cfg.DATASETS.TEST)
    for name in names:
        if name not in registered:
            raise DatasetCheckError(
                f"data set {name!r} is not registered; CADET.DATA (ROOT {cfg.CADET.DATA.ROOT!r}, TRAIN_SET "
                f"{cfg.CADET.DATA.TRAIN_SET!r}, TEST_SETS {list(cfg.CADET.DATA.TEST_SETS)}) registers {_of_root(cfg)}")
        classes = getattr(MetadataCatalog.get(name), "thing_classes", None)
        n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        if classes is not None and len(classes) != n:
            listing = os.path.join(cfg.CADET.DATA.ROOT, "classes.txt")
            source = ("CADET.DATA.CLASSES" if cfg.CADET.DATA.CLASSES else listing if os.path.isfile(listing)
                      else f"no {listing}: one class")
            raise DatasetCheckError(
                f"data set {name!r} ({_folder(name)}) has {len(classes)} classes {list(classes)} ({source}), but "
                f"MODEL.ROI_HEADS.NUM_CLASSES is {n}: set MODEL.ROI_HEADS.NUM_CLASSES {len(classes)}, or list "
                "the model's classes in CADET.DATA.CLASSES")
    for name in cfg.DATASETS.TRAIN if train else []:
        if not DatasetCatalog.get(name):
            if cfg.CADET.DATA.UNLABELED == "negative":
                raise DatasetCheckError(f"training set {name!r} ({_folder(name)}) holds no image; fill the folder "
                                        "or remove it from DATASETS.TRAIN")
            raise DatasetCheckError(
                f"training set {name!r} ({_folder(name)}) has no usable image: each was skipped, as unlabeled "
                f"(no {_labels(name)}; CADET.DATA.UNLABELED skip) or as a bad file (CADET.DATA.ON_ERROR skip; "
                "the log's line for this set counts both); add the label files (tools/convert_dataset.py writes "
                "them), or set CADET.DATA.UNLABELED negative to train on its images as images without objects")
    for name in cfg.DATASETS.TEST:
        dicts = DatasetCatalog.get(name)
        if not dicts:
            if cfg.CADET.DATA.UNLABELED == "negative":
                raise DatasetCheckError(f"test set {name!r} ({_folder(name)}) holds no image; remove it from "
                                        "DATASETS.TEST or fill the folder")
            raise DatasetCheckError(
                f"test set {name!r} ({_folder(name)}) has no labeled image (no {_labels(name)} for its images, "
                "or no image at all); add the label files, set CADET.DATA.UNLABELED negative to evaluate it as "
                "images without objects, or remove it from DATASETS.TEST")
        boxes = sum(1 for d in dicts for a in d.get("annotations", []) if not a.get("iscrowd"))
        if boxes == 0:
            logger.warning(
                f"[cadet] test set {name} ({_folder(name)}): {len(dicts)} images without any box; it is evaluated "
                "as images without objects: COCO AP is undefined there, so Detectron2's COCOEvaluator computes "
                "none ('Annotations are not available for evaluation') and its row of the metrics table shows "
                f"nan; its detections, every one a false positive, are saved in OUTPUT_DIR/inference/{name}/"
                "coco_instances_results.json")
