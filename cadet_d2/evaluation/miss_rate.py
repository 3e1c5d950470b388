"""KAIST's log-average miss rate MR^-2 (Dollár et al.'s Caltech protocol, as the KAIST devkit's
``kaist_eval_full.m`` + ``bbGt.m`` compute it) as a Detectron2 evaluator.

Per image, detections of the evaluated class are matched greedily by score to the ground truth of
a setting (:func:`match_image`; which boxes count and which are ignore regions:
:mod:`cadet_d2.evaluation.miss_rate_gt`); over the set, the miss rate is read off at 9 FPPI points
evenly spaced in log space over [1e-2, 1e0] and averaged in log space
(:func:`log_average_miss_rate`). The protocol, and where it follows the devkit, is in
docs/evaluation.md.

Detections are XYXY_ABS boxes in the annotations' pixels (the model's Instances, or a results file
read by :mod:`cadet_d2.evaluation.results_files`); they are never filtered by height.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.bbgt import BBGT_FOLDER, frame_time
from .miss_rate_gt import SETTINGS, Setting, frames_of, ignore_per_image, record_objects

logger = logging.getLogger(__name__)

TASK = "miss_rate"  # key of this evaluator's results, beside COCOEvaluator's "bbox"
#: FPPI reference points: 10^-2, 10^-1.75, ..., 10^0.
REF_FPPI = np.logspace(-2.0, 0.0, 9)
#: A miss rate of 0 at a reference point counts as this in the log (the toolbox's floor).
MISS_FLOOR = 1e-10


def resolve_class(class_name: str, thing_classes: list[str], dataset_name: str) -> int:
    """Contiguous id of the evaluated class: ``class_name``, or "" = "person" if the data set has
    it, else class 0."""
    if class_name:
        if class_name not in thing_classes:
            raise ValueError(f"CADET.TEST.MISS_RATE.CLASS = {class_name!r} is not a class of {dataset_name!r} "
                             f"(classes: {list(thing_classes)})")
        return list(thing_classes).index(class_name)
    if not thing_classes:
        raise ValueError(f"{dataset_name!r} has no thing_classes in its metadata; the miss rate needs a class")
    return list(thing_classes).index("person") if "person" in thing_classes else 0


def check_miss_rate_config(cfg) -> None:
    """Before training: with ``CADET.TEST.MISS_RATE.ENABLED``, the class resolves in every
    (registered) ``DATASETS.TEST`` set."""
    if not cfg.CADET.TEST.MISS_RATE.ENABLED:
        return
    for name in cfg.DATASETS.TEST:
        resolve_class(cfg.CADET.TEST.MISS_RATE.CLASS, MetadataCatalog.get(name).get("thing_classes", []), name)


def _areas(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def overlap_pair(det: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, intersection / detection area), both (D, G), of det (D, 4) and gt (G, 4) XYXY boxes
    (bbGt's ``compOas``: no +1 on widths)."""
    lt = np.maximum(det[:, None, :2], gt[None, :, :2])
    rb = np.minimum(det[:, None, 2:], gt[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    a_det, a_gt = _areas(det)[:, None], _areas(gt)[None, :]
    union = a_det + a_gt - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    a_det = np.broadcast_to(a_det, inter.shape)
    return iou, np.divide(inter, a_det, out=np.zeros_like(inter), where=a_det > 0)


def overlaps(det: np.ndarray, gt: np.ndarray, gt_ignore: np.ndarray) -> np.ndarray:
    """(D, G) overlap: IoU with a regular gt box; intersection / detection area with an ignore region.

    det: (D, 4), gt: (G, 4) XYXY; gt_ignore: (G,) bool.
    """
    iou, ioa = overlap_pair(det, gt)
    return np.where(gt_ignore[None, :], ioa, iou)


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
                iou: float = 0.5) -> tuple[np.ndarray, int]:
    """Match one image's detections to its ground truth, highest score first (bbGt's ``evalRes``).

    det_boxes: (D, 4), det_scores: (D,), gt_boxes: (G, 4) XYXY_ABS, gt_ignore: (G,) bool.
    Returns (flags (D,) int in the detections' order: 1 true positive, 0 false positive, -1
    ignored; number of regular gt boxes); the rule is :func:`match_overlaps`'.
    """
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_ignore = np.asarray(gt_ignore, dtype=bool).reshape(-1)
    return match_overlaps(overlaps(det_boxes, gt_boxes, gt_ignore), det_scores, gt_ignore, iou)


def match_overlaps(oa: np.ndarray, det_scores: np.ndarray, gt_ignore: np.ndarray,
                   iou: float = 0.5) -> tuple[np.ndarray, int]:
    """:func:`match_image` on its (D, G) overlaps ``oa`` (:func:`overlaps`).

    A detection takes the regular gt box (not yet matched) of highest overlap >= ``iou`` (the last
    such box in gt order on a tie): a true positive. Failing that, any ignore region covering >=
    ``iou`` of the detection's area: ignored; an ignore region can take any number of detections.
    Otherwise a false positive.
    """
    num_regular = int(len(gt_ignore) - np.count_nonzero(gt_ignore))
    if oa.size == 0:
        return np.zeros(oa.shape[0], dtype=np.int64), num_regular
    hit = oa >= iou
    # -1 on an ignore region, unless a regular box takes the detection below
    flags = -(hit & gt_ignore[None, :]).any(axis=1).astype(np.int64)
    candidates = np.flatnonzero((hit & ~gt_ignore[None, :]).any(axis=1))  # only these can be true positives
    if len(candidates) == 0:
        return flags, num_regular
    regular = np.flatnonzero(~gt_ignore)
    taken = np.zeros(len(gt_ignore), dtype=bool)
    scores = np.asarray(det_scores, dtype=np.float64)
    for d in candidates[np.argsort(-scores[candidates], kind="stable")]:
        free = regular[~taken[regular]]
        if len(free) and oa[d, free].max() >= iou:
            g = free[len(free) - 1 - np.argmax(oa[d, free][::-1])]  # equal overlaps: the last box, as evalRes
            taken[g], flags[d] = True, 1
    return flags, num_regular


def miss_rate_curve(scores: np.ndarray, flags: np.ndarray, num_pos: int,
                    num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(FPPI, miss rate), one point per counted detection in descending score order.

    scores, flags: (N,) over the whole set (flags from :func:`match_image`; -1 are left out).
    """
    keep = np.asarray(flags) != -1
    scores, flags = np.asarray(scores, dtype=np.float64)[keep], np.asarray(flags)[keep]
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(flags[order] == 1)
    fp = np.cumsum(flags[order] == 0)
    return fp / num_images, 1.0 - tp / num_pos


def log_average_miss_rate(scores: np.ndarray, flags: np.ndarray, num_pos: int, num_images: int,
                          ref: np.ndarray = REF_FPPI) -> tuple[float, np.ndarray]:
    """MR^-2 in [0, 1] and the miss rate at each of ``ref`` (FPPI points).

    At each reference FPPI the miss rate is that of the last point of the curve whose FPPI does
    not exceed it (1.0 when there is none: no detection or a false positive first); beyond the end
    of the curve it stays at the last point's. MR^-2 = exp(mean(log(max(miss, MISS_FLOOR)))).
    NaN when ``num_pos`` is 0 (no ground truth to miss).
    """
    if num_pos == 0:
        return math.nan, np.full(len(ref), math.nan)
    if num_images <= 0:
        raise ValueError(f"num_images = {num_images}: the miss rate needs at least one image")
    fppi, miss = miss_rate_curve(scores, flags, num_pos, num_images)
    fppi, miss = np.concatenate([[-np.inf], fppi]), np.concatenate([[1.0], miss])
    at_ref = miss[np.searchsorted(fppi, ref, side="right") - 1]
    return float(np.exp(np.mean(np.log(np.maximum(at_ref, MISS_FLOOR))))), at_ref




@dataclass
class SettingResult:
    """One setting's outcome: MR^-2 in [0, 1] (NaN without ground truth), regular gt boxes,
    images, the curve (FPPI, miss rate: (N,) each, one point per counted detection by score) and
    the miss rate at each reference FPPI (9,)."""

    mr: float
    num_pos: int
    num_images: int
    fppi: np.ndarray
    miss: np.ndarray
    at_ref: np.ndarray

    @property
    def recall(self) -> float:
        """The recall at the end of the curve (all detections)."""
        return float(1.0 - self.miss[-1]) if len(self.miss) else 0.0


def evaluate_settings(records: list[dict], predictions: dict, class_id: int, class_name: str,
                      settings: tuple[Setting, ...], iou: float = 0.5, bbgt_dir: str = "") -> dict[str, SettingResult]:
    """{setting name: :class:`SettingResult`} over ``records`` (dataset dicts), for each setting
    that has a meaning on them (:func:`~cadet_d2.evaluation.miss_rate_gt.frames_of`).

    predictions: {image_id: (boxes (D, 4) XYXY_ABS, scores (D,))} of the evaluated class, one entry
    per image evaluated (an image without detections has empty arrays). bbgt_dir: the set's bbGt
    copies ("" = ground truth from the dataset dicts).
    """
    covers = {s.name: frames_of(s, [r.get("stem", "") for r in records]) for s in settings}
    chosen = [s for s in settings if covers[s.name] is not None]
    objects = [record_objects(r, class_id, class_name, bbgt_dir) for r in records]
    ignore = ignore_per_image(objects, tuple(chosen))  # per image (S, G)
    per = {s.name: ([], [], 0) for s in chosen}
    for i, (r, obj) in enumerate(zip(records, objects)):
        boxes, scores = predictions[r["image_id"]]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        gt = np.concatenate([obj.boxes[:, :2], obj.boxes[:, :2] + obj.boxes[:, 2:]], axis=1)
        iou_m, ioa_m = overlap_pair(boxes, gt)
        for k, s in enumerate(chosen):
            if not covers[s.name][i]:
                continue
            ign = ignore[i][k]
            flags, n = match_overlaps(np.where(ign[None, :], ioa_m, iou_m), scores, ign, iou)
            all_scores, all_flags, num_pos = per[s.name]
            all_scores.append(np.asarray(scores, dtype=np.float64))
            all_flags.append(flags)
            per[s.name] = (all_scores, all_flags, num_pos + n)
    out = {}
    for s in chosen:
        all_scores, all_flags, num_pos = per[s.name]
        scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
        flags = np.concatenate(all_flags) if all_flags else np.zeros(0, dtype=np.int64)
        num_images = int(covers[s.name].sum())
        mr, at_ref = log_average_miss_rate(scores, flags, num_pos, num_images)
        fppi, miss = miss_rate_curve(scores, flags, num_pos, num_images) if num_pos else (np.zeros(0), np.zeros(0))
        out[s.name] = SettingResult(mr, num_pos, num_images, fppi, miss, at_ref)
    return out


def bbgt_folder(dataset_name: str) -> str:
    """The set's bbGt copies (``<set>/bbgt``, written by the KAIST converter), or "" when it has none."""
    root = MetadataCatalog.get(dataset_name).get("cadet_root", "")
    folder = os.path.join(root, BBGT_FOLDER) if root else ""
    return folder if folder and os.path.isdir(folder) else ""


class MissRateEvaluator(DatasetEvaluator):
    """MR^-2 (in %, lower is better) of one class on one data set in each setting:
    ``{"miss_rate": {"MR-2 reasonable": ., "MR-2 near": ., ...}}``, over the images processed
    (each one counts in FPPI). With ``output_dir``, also writes the curves there
    (:func:`~cadet_d2.evaluation.curves.write_curves`); ``self.results`` holds the last
    :class:`SettingResult` per setting."""

    @configurable
    def __init__(self, dataset_name: str, *, class_name: str = "", settings: tuple[str, ...] = ("reasonable",),
                 iou: float = 0.5, output_dir: str = ""):
        self.dataset_name = dataset_name
        thing_classes = MetadataCatalog.get(dataset_name).get("thing_classes", [])
        self.class_id = resolve_class(class_name, thing_classes, dataset_name)
        self.class_name = list(thing_classes)[self.class_id]
        self.settings = tuple(SETTINGS[s] for s in settings)
        self.iou = iou
        self.output_dir = output_dir
        self.results: dict[str, SettingResult] = {}
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str = "") -> dict:
        mr = cfg.CADET.TEST.MISS_RATE
        return {"dataset_name": dataset_name, "class_name": mr.CLASS, "settings": tuple(mr.SETTINGS),
                "iou": float(mr.IOU), "output_dir": output_dir}

    def reset(self) -> None:
        self.predictions: dict = {}

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """inputs: dicts with "image_id"; outputs: dicts with "instances" (pred_boxes, scores,
        pred_classes) in original image pixels."""
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            keep = inst.pred_classes == self.class_id
            boxes = inst.pred_boxes.tensor[keep].numpy().astype(np.float64).reshape(-1, 4)
            self.predictions[inp["image_id"]] = (boxes, inst.scores[keep].numpy().astype(np.float64))

    def evaluate(self) -> dict:
        gathered = comm.gather(self.predictions, dst=0)
        if not comm.is_main_process():
            return {}
        predictions = dict(itertools.chain.from_iterable(p.items() for p in gathered))
        if not predictions:
            logger.warning(f"[cadet] miss rate of {self.dataset_name}: no image was processed")
            return {}
        records = {r["image_id"]: r for r in DatasetCatalog.get(self.dataset_name)}
        unknown = [i for i in predictions if i not in records]
        if unknown:
            raise KeyError(f"miss rate of {self.dataset_name!r}: predictions for image ids that are not in the "
                           f"data set: {unknown[:5]}")
        chosen = [records[i] for i in sorted(predictions)]
        bbgt = bbgt_folder(self.dataset_name)
        logger.info(f"[cadet] miss rate of {self.dataset_name}: ground truth from "
                    + (f"the bbGt files in {bbgt}" if bbgt else "the dataset dicts' annotations"))
        if not bbgt and any(frame_time(r.get("stem", "")) for r in chosen):
            logger.warning(f"[cadet] {self.dataset_name} holds KAIST frames but no <set>/{BBGT_FOLDER}/ folder: its "
                           "miss rates use the converted labels (clipped boxes, persons the converter made ignore "
                           "regions), not the KAIST devkit's ground truth; convert the root again "
                           "(tools/convert_dataset.py kaist) to get the published protocol")
        self.results = evaluate_settings(chosen, predictions, self.class_id, self.class_name, self.settings,
                                         self.iou, bbgt)
        metrics = {}
        for s in self.settings:
            res = self.results.get(s.name)
            if res is None:
                logger.info(f"[cadet] {self.dataset_name}: {s.metric} left out (the set does not hold both day "
                            "and night KAIST frames)")
                continue
            if res.num_pos == 0:
                logger.warning(f"[cadet] {self.dataset_name}: no ground truth of class {self.class_name!r} in "
                               f"setting {s.name!r} of the {res.num_images} images; its {s.metric} is NaN")
            metrics[s.metric] = 100.0 * res.mr
        if self.output_dir:
            from .curves import write_curves

            write_curves(self.output_dir, self.dataset_name, self.results)
        return {TASK: metrics}
