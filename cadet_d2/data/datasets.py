"""Registering a YOLO/.npy data root as Detectron2 datasets.

A data root holds ``images/<stem>.npy`` and ``labels/<stem>.txt`` plus optional test-set
sub-folders with the same layout. :func:`register_cadet_dataset` registers

* ``<name>_train`` and ``<name>_test``: a split of the root's images (sorted stems, permuted
  with ``seed``, the first ``test_fraction`` held out), identical on every machine;
* ``<name>_<folder>`` for each extra test set (``daytest1``, ``nighttest1``, ...).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..layout import ON_ERROR_POLICIES, UNLABELED_POLICIES
from .errors import DataError
from .npy import read_image_size
from .yolo import read_yolo_labels

logger = logging.getLogger(__name__)


@dataclass
class LoadStats:
    """What loading a data set dropped, for the log."""

    images: int = 0
    kept: int = 0
    unlabeled_skipped: int = 0
    unlabeled_negative: int = 0
    degenerate_boxes: int = 0
    boxes: int = 0
    errors: list = field(default_factory=list)  # messages of images skipped with ON_ERROR=skip


def read_classes(root: str, classes: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Class names: ``classes`` if given, else ``root/classes.txt``, else ``["object"]``."""
    if classes:
        return list(classes)
    path = os.path.join(root, "classes.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise DataError(path, "classes.txt is empty")
        return names
    return ["object"]


def class_names(cfg) -> list[str]:
    """The model's class names: :func:`read_classes` of ``CADET.DATA``, or ``class<i>`` names when
    their number is not ``MODEL.ROI_HEADS.NUM_CLASSES``."""
    names = read_classes(cfg.CADET.DATA.ROOT, cfg.CADET.DATA.CLASSES)
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    return names if len(names) == n else [f"class{i}" for i in range(n)]


def list_stems(root: str) -> list[str]:
    """Sorted stems of ``root/images/*.npy``; checks that every label file has an image."""
    image_dir, label_dir = os.path.join(root, "images"), os.path.join(root, "labels")
    if not os.path.isdir(image_dir):
        raise DataError(root, "no images/ folder (expected images/*.npy and labels/*.txt)")
    stems = sorted(f[:-4] for f in os.listdir(image_dir) if f.endswith(".npy"))
    if not stems:
        raise DataError(image_dir, "no .npy images")
    if os.path.isdir(label_dir):
        orphans = sorted(set(f[:-4] for f in os.listdir(label_dir) if f.endswith(".txt")) - set(stems))
        if orphans:
            raise DataError(
                os.path.join(label_dir, orphans[0] + ".txt"),
                f"label file without an image ({len(orphans)} such label file(s) in {label_dir})",
            )
    return stems


def split_stems(stems: list[str], test_fraction: float = 0.2, seed: int = 42) -> tuple[list[str], list[str]]:
    """(train, test) split of sorted stems by a seeded permutation: same on every machine."""
    ordered = sorted(stems)
    perm = np.random.RandomState(seed).permutation(len(ordered))
    n_test = int(round(len(ordered) * test_fraction))
    test = sorted(ordered[i] for i in perm[:n_test])
    train = sorted(ordered[i] for i in perm[n_test:])
    return train, test


def load_cadet_dicts(
    root: str,
    stems: list[str],
    num_classes: int,
    channels: int = 5,
    unlabeled: str = "skip",
    on_error: str = "raise",
) -> tuple[list[dict], LoadStats]:
    """Detectron2 dataset dicts for ``stems`` of a data root, with absolute XYXY boxes."""
    stats = LoadStats(images=len(stems))
    dicts = []
    for stem in stems:
        image_path = os.path.join(root, "images", stem + ".npy")
        label_path = os.path.join(root, "labels", stem + ".txt")
        try:
            height, width = read_image_size(image_path, channels)
            if os.path.isfile(label_path):
                annotations, dropped = read_yolo_labels(label_path, width, height, num_classes)
                stats.degenerate_boxes += dropped
            elif unlabeled == "negative":
                annotations = []
                stats.unlabeled_negative += 1
            else:
                stats.unlabeled_skipped += 1
                continue
        except DataError as e:
            if on_error != "skip":
                raise
            stats.errors.append(str(e))
            continue
        stats.boxes += len(annotations)
        dicts.append({
            "file_name": image_path, "image_id": len(dicts), "stem": stem,
            "height": height, "width": width, "annotations": annotations,
        })
    stats.kept = len(dicts)
    return dicts, stats


def _log_stats(name: str, stats: LoadStats) -> None:
    logger.info(
        f"[cadet] {name}: {stats.kept}/{stats.images} images, {stats.boxes} boxes; "
        f"unlabeled skipped {stats.unlabeled_skipped}, unlabeled as negatives {stats.unlabeled_negative}, "
        f"degenerate boxes dropped {stats.degenerate_boxes}, bad files skipped {len(stats.errors)}"
    )
    for msg in stats.errors:
        logger.warning(f"[cadet] {name}: skipped {msg}")


def register_cadet_dataset(
    name: str,
    root: str,
    test_sets: list[str] | tuple[str, ...] = ("daytest1", "nighttest1"),
    classes: list[str] | tuple[str, ...] = (),
    channels: int = 5,
    unlabeled: str = "skip",
    on_error: str = "raise",
    test_fraction: float = 0.2,
    seed: int = 42,
) -> list[str]:
    """Register ``<name>_train``, ``<name>_test`` and ``<name>_<set>`` for each test set.

    Loading is lazy (on first use). Registering again with the same arguments is a no-op, so
    it is safe in every process of a distributed run. Returns the registered names.
    """
    if unlabeled not in UNLABELED_POLICIES:
        raise ValueError(f"CADET.DATA.UNLABELED must be one of {UNLABELED_POLICIES}, got {unlabeled!r}")
    if on_error not in ON_ERROR_POLICIES:
        raise ValueError(f"CADET.DATA.ON_ERROR must be one of {ON_ERROR_POLICIES}, got {on_error!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Data root {root!r} does not exist. Make the synthetic set with "
            "`python tools/make_synthetic.py --out datasets/synth` or set CADET.DATA.ROOT."
        )
    class_names = read_classes(root, classes)
    key = (os.path.abspath(root), tuple(test_sets), tuple(class_names), channels, unlabeled, on_error,
           test_fraction, seed)

    def loader(set_root: str, split: str | None, full_name: str):
        def load() -> list[dict]:
            stems = list_stems(set_root)
            if split is not None:
                stems = split_stems(stems, test_fraction, seed)[0 if split == "train" else 1]
            dicts, stats = load_cadet_dicts(set_root, stems, len(class_names), channels, unlabeled, on_error)
            _log_stats(full_name, stats)
            return dicts
        return load

    entries = [(f"{name}_train", root, "train"), (f"{name}_test", root, "test")]
    entries += [(f"{name}_{s}", os.path.join(root, s), None) for s in test_sets]
    for full_name, set_root, split in entries:
        if full_name in DatasetCatalog.list():
            if getattr(MetadataCatalog.get(full_name), "cadet_key", None) == key:
                continue
            DatasetCatalog.remove(full_name)
            MetadataCatalog.remove(full_name)
        if split is None and not os.path.isdir(set_root):
            raise FileNotFoundError(f"Test set folder {set_root!r} not found (CADET.DATA.TEST_SETS).")
        DatasetCatalog.register(full_name, loader(set_root, split, full_name))
        MetadataCatalog.get(full_name).set(
            thing_classes=class_names, cadet_key=key, cadet_root=set_root,
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(class_names))},
            evaluator_type="coco",
        )
    return [e[0] for e in entries]


def register_from_config(cfg) -> list[str]:
    """Register the data sets described by ``cfg.CADET.DATA``."""
    d = cfg.CADET.DATA
    return register_cadet_dataset(
        d.NAME, d.ROOT, test_sets=d.TEST_SETS, classes=d.CLASSES, channels=cfg.CADET.INPUT.FILE_CHANNELS,
        unlabeled=d.UNLABELED, on_error=d.ON_ERROR, test_fraction=d.TEST_FRACTION, seed=d.SPLIT_SEED,
    )
