"""Registering a data root as Detectron2 datasets (layouts: docs/data.md).

A set is a folder holding ``images/<stem>.npy`` (5-channel arrays) or ``pairs.csv`` (paired
image files), with ``labels/<stem>.txt`` (YOLO) and optional ``ignore/<stem>.txt`` (ignore
regions, loaded with ``iscrowd=1``); or the folders per modality of ``CADET.DATA.FOLDERS``.
:func:`register_cadet_dataset` registers

* ``<name>_train`` and ``<name>_test``: a split of the root's own set (sorted stems, permuted
  with ``seed``, the first ``test_fraction`` held out), identical on every machine; or, with
  ``train_set``, ``<name>_train`` = that set and no ``<name>_test``;
* ``<name>_<folder>`` for each test set (``test``, ``test_day``, ``daytest1``, ...).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .errors import DataError
from .event_frames import event_file_size
from .images import image_size
from .memo import FileMemo, folder_entries, stat_entry
from .npy import read_image_size
from .pairs import PAIRS_FILE, Pair, read_pairs_csv, scan_folders
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
    ignore_regions: int = 0
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


def _read_annotations(label_path: str, ignore_path: str, width: int, height: int, num_classes: int,
                      unlabeled: str, stats: LoadStats) -> list[dict] | None:
    """Boxes of ``label_path`` plus the ignore regions of ``ignore_path`` (``iscrowd=1``), or None
    for an unlabeled image that ``unlabeled`` "skip" drops (counted in ``stats``)."""
    if os.path.isfile(label_path):
        annotations, dropped = read_yolo_labels(label_path, width, height, num_classes)
        stats.degenerate_boxes += dropped
    elif unlabeled == "negative":
        annotations = []
        stats.unlabeled_negative += 1
    else:
        stats.unlabeled_skipped += 1
        return None
    if os.path.isfile(ignore_path):
        ignored, dropped = read_yolo_labels(ignore_path, width, height, num_classes, iscrowd=1)
        stats.degenerate_boxes += dropped
        stats.ignore_regions += len(ignored)
        annotations = annotations + ignored
    return annotations


def load_cadet_dicts(
    root: str,
    stems: list[str],
    num_classes: int,
    channels: int = 5,
    unlabeled: str = "skip",
    on_error: str = "raise",
) -> tuple[list[dict], LoadStats]:
    """Detectron2 dataset dicts for ``stems`` of a ``.npy`` set, with absolute XYXY boxes."""
    def load(stem: str) -> dict | None:
        image_path = os.path.join(root, "images", stem + ".npy")
        height, width = read_image_size(image_path, channels)
        annotations = _read_annotations(os.path.join(root, "labels", stem + ".txt"),
                                        os.path.join(root, "ignore", stem + ".txt"),
                                        width, height, num_classes, unlabeled, stats)
        if annotations is None:
            return None
        return {"file_name": image_path, "stem": stem, "height": height, "width": width, "annotations": annotations}

    stats = LoadStats(images=len(stems))
    return _load_each(stems, load, on_error, stats), stats


def _load_each(items: list, load, on_error: str, stats: LoadStats) -> list[dict]:
    """``load(item)`` for each item -> the dataset dicts, numbered by ``image_id``; ``None`` (an
    unlabeled image skipped) is dropped; a :class:`DataError` stops, or with ``on_error`` "skip" is
    counted in ``stats.errors``."""
    dicts = []
    for item in items:
        try:
            entry = load(item)
        except DataError as e:
            if on_error != "skip":
                raise
            stats.errors.append(str(e))
            continue
        if entry is None:
            continue
        stats.boxes += sum(1 for a in entry["annotations"] if not a.get("iscrowd"))
        entry["image_id"] = len(dicts)
        dicts.append(entry)
    stats.kept = len(dicts)
    return dicts


def load_pair_dicts(
    pairs: list[Pair],
    label_dir: str,
    ignore_dir: str,
    num_classes: int,
    modalities: list[str] | tuple[str, ...] = ("rgb", "thermal"),
    unlabeled: str = "skip",
    on_error: str = "raise",
    size_mismatch: str = "resize",
) -> tuple[list[dict], LoadStats]:
    """Detectron2 dataset dicts for paired image files.

    Each dict has ``file_name`` (the RGB file), ``pair`` {modality: file} of ``modalities`` only,
    and the RGB image's ``height``/``width`` (from its header; labels are normalised to it).
    With ``size_mismatch`` "error", a partner of another size is a :class:`DataError`.
    """
    def load(pair: Pair) -> dict | None:
        record = pair.record(modalities)
        height, width = record["height"], record["width"]
        if size_mismatch == "error":
            for m in (m for m in modalities if m != "rgb"):  # the RGB size is the record's
                hw = event_file_size(pair.files[m]) if m == "event" else image_size(pair.files[m])
                if hw != (height, width):
                    raise DataError(pair.files[m], f"{m} image is {hw[0]}x{hw[1]}, the RGB image "
                                    f"{pair.files['rgb']} is {height}x{width} (CADET.INPUT.SIZE_MISMATCH "
                                    "error; 'resize' resizes it to the RGB size)")
        annotations = _read_annotations(os.path.join(label_dir, pair.stem + ".txt"),
                                        os.path.join(ignore_dir, pair.stem + ".txt"),
                                        width, height, num_classes, unlabeled, stats)
        if annotations is None:
            return None
        return {**record, "stem": pair.stem, "annotations": annotations}

    stats = LoadStats(images=len(pairs))
    return _load_each(pairs, load, on_error, stats), stats


def _log_stats(name: str, stats: LoadStats) -> None:
    logger.info(
        f"[cadet] {name}: {stats.kept}/{stats.images} images, {stats.boxes} boxes; "
        f"unlabeled skipped {stats.unlabeled_skipped}, unlabeled as negatives {stats.unlabeled_negative}, "
        f"ignore regions {stats.ignore_regions}, degenerate boxes dropped {stats.degenerate_boxes}, "
        f"bad files skipped {len(stats.errors)}"
    )
    for msg in stats.errors:
        logger.warning(f"[cadet] {name}: skipped {msg}")


FOLDER_KEYS = ("labels", "ignore")


@dataclass
class SetSpec:
    """Where one set's images and labels are: ``kind`` "npy" (``folder/images/*.npy``), "pairs"
    (``folder/pairs.csv``) or "folders" (``modality_folders``, paired by stem)."""

    kind: str
    folder: str
    label_dir: str
    ignore_dir: str
    modality_folders: dict = field(default_factory=dict)

    def fingerprint(self) -> tuple:
        """``(path, size, mtime_ns)`` of every file a read of this set depends on: the entries of
        its image folder(s) (for a pairs set: pairs.csv and each file it names), of its label
        folder and of its ignore folder."""
        if self.kind == "pairs":
            index = os.path.join(self.folder, PAIRS_FILE)
            images = (stat_entry(index),) + tuple(
                stat_entry(f) for p in read_pairs_csv(index) for f in p.files.values())
        else:
            folders = (self.modality_folders.values() if self.kind == "folders"
                       else [os.path.join(self.folder, "images")])
            images = tuple(e for f in folders for e in folder_entries(f))
        return images + folder_entries(self.label_dir) + folder_entries(self.ignore_dir)

    def stems_and_pairs(self):
        """(sorted stems, {stem: Pair} or None for a .npy set)."""
        if self.kind == "npy":
            return list_stems(self.folder), None
        pairs = (read_pairs_csv(os.path.join(self.folder, PAIRS_FILE)) if self.kind == "pairs"
                 else scan_folders(self.modality_folders))
        return sorted(p.stem for p in pairs), {p.stem: p for p in pairs}


def find_set(root: str, set_name: str, folders: dict | None = None) -> SetSpec | None:
    """The set ``set_name`` of a data root ("" = the root itself), or None when it holds none.

    ``folders``: ``CADET.DATA.FOLDERS`` as a dict; when it names any modality, every set is read
    from those folders (``{set}`` replaced by the set name, relative to ``root``)."""
    folders = {k: v for k, v in (folders or {}).items() if v}
    modality = {k: v for k, v in folders.items() if k not in FOLDER_KEYS}
    if modality:
        def where(template: str) -> str:
            return os.path.normpath(os.path.join(root, template.format(set=set_name)))
        dirs = {m: where(t) for m, t in modality.items()}
        if not os.path.isdir(dirs.get("rgb", "")):
            return None
        return SetSpec("folders", dirs["rgb"], where(folders.get("labels", "{set}/labels")),
                       where(folders.get("ignore", "{set}/ignore")), dirs)
    folder = os.path.join(root, set_name) if set_name else root
    labels, ignore = os.path.join(folder, "labels"), os.path.join(folder, "ignore")
    if os.path.isfile(os.path.join(folder, PAIRS_FILE)):
        return SetSpec("pairs", folder, labels, ignore)
    if os.path.isdir(os.path.join(folder, "images")):
        return SetSpec("npy", folder, labels, ignore)
    return None


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
    train_set: str = "",
    folders: dict | None = None,
    modalities: list[str] | tuple[str, ...] = ("rgb", "thermal", "event"),
    size_mismatch: str = "resize",
) -> list[str]:
    """Register ``<name>_train``, ``<name>_test`` and ``<name>_<set>`` for each test set.

    ``train_set`` "": ``<name>_train``/``<name>_test`` are a seeded split of the root's own images
    (when the root holds a set); a folder name: ``<name>_train`` is that set (when it exists) and
    no ``<name>_test`` is made. Each test set must exist. Values are those of ``CADET.DATA`` /
    ``CADET.INPUT`` (checked by ``validate_cadet_config``). Loading is lazy: the first
    ``DatasetCatalog.get`` of a set reads its files (image headers, label files) and logs what it
    dropped; later calls in the same process (the pre-training checks, the loader, the
    evaluators) get a deep copy of that result while :meth:`SetSpec.fingerprint` is unchanged
    (:class:`~cadet_d2.data.memo.FileMemo`). Registering again with the same arguments is a no-op,
    so it is safe in every process of a distributed run. Returns the registered names.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Data root {root!r} does not exist. Make the synthetic set with "
            "`python tools/make_synthetic.py --out datasets/synth` or set CADET.DATA.ROOT."
        )
    class_names = read_classes(root, classes)
    folders = dict(folders or {})
    key = (os.path.abspath(root), tuple(test_sets), tuple(class_names), channels, unlabeled, on_error,
           test_fraction, seed, train_set, tuple(sorted(folders.items())), tuple(modalities), size_mismatch)

    def loader(spec: SetSpec, split: str | None, full_name: str):
        def read_set() -> list[dict]:
            stems, pairs = spec.stems_and_pairs()
            if split is not None:
                stems = split_stems(stems, test_fraction, seed)[0 if split == "train" else 1]
            if pairs is None:
                dicts, stats = load_cadet_dicts(spec.folder, stems, len(class_names), channels, unlabeled, on_error)
            else:
                source = spec.folder if spec.kind == "folders" else os.path.join(spec.folder, PAIRS_FILE)
                absent = ([m for m in modalities if m not in pairs[stems[0]].files]
                          if stems and spec.kind == "pairs" else [])  # folders: validate_cadet_config
                if absent:
                    raise DataError(source, f"CADET.INPUT.MODALITIES has {absent} but this set has only "
                                            f"{list(pairs[stems[0]].files)}; drop it from CADET.INPUT.MODALITIES")
                dicts, stats = load_pair_dicts([pairs[s] for s in stems], spec.label_dir, spec.ignore_dir,
                                               len(class_names), modalities, unlabeled, on_error, size_mismatch)
            _log_stats(full_name, stats)
            return dicts

        return FileMemo(read_set, spec.fingerprint)

    entries = []
    if train_set:
        spec = find_set(root, train_set, folders)
        if spec is not None:
            entries.append((f"{name}_train", spec, None))
        else:
            logger.info(f"[cadet] {root} holds no set {train_set!r} (CADET.DATA.TRAIN_SET): "
                        f"{name}_train not registered")
    else:
        spec = find_set(root, "", folders)
        if spec is not None:
            entries += [(f"{name}_train", spec, "train"), (f"{name}_test", spec, "test")]
    for s in test_sets:
        spec = find_set(root, s, folders)
        if spec is None:
            raise FileNotFoundError(
                f"Test set {s!r} not found in {root!r} (CADET.DATA.TEST_SETS): expected {os.path.join(root, s)} "
                f"with pairs.csv or images/" + (", or the folders of CADET.DATA.FOLDERS" if any(folders.values()) else ""))
        entries.append((f"{name}_{s}", spec, None))
    for full_name, spec, split in entries:
        if full_name in DatasetCatalog.list():
            if getattr(MetadataCatalog.get(full_name), "cadet_key", None) == key:
                continue
            DatasetCatalog.remove(full_name)
            MetadataCatalog.remove(full_name)
        DatasetCatalog.register(full_name, loader(spec, split, full_name))
        MetadataCatalog.get(full_name).set(
            thing_classes=class_names, cadet_key=key, cadet_root=spec.folder, cadet_format=spec.kind,
            cadet_labels=spec.label_dir,
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
        train_set=d.TRAIN_SET, folders=dict(d.FOLDERS), modalities=list(cfg.CADET.INPUT.MODALITIES),
        size_mismatch=cfg.CADET.INPUT.SIZE_MISMATCH,
    )
