"""KAIST's log-average miss rate MR^-2 (Dollár et al.'s Caltech protocol) as a Detectron2 evaluator.

Per image, detections of the evaluated class are matched greedily by score to its ground truth
(:func:`match_image`); over the set, the miss rate is read off at 9 FPPI points evenly spaced in
log space over [1e-2, 1e0] and averaged in log space (:func:`log_average_miss_rate`).
Two subsets (:func:`subsets_from_config`): "all" (every annotation of the class that is not an ignore region)
and "reasonable" (tall enough and at most partly occluded; the rest become ignore regions).
The protocol, and where it follows the toolbox, is in docs/evaluation.md.

Boxes are XYXY_ABS in original image pixels: dataset dicts' annotations (``iscrowd`` 1 marks an
ignore region, optional ``occlusion`` 0 none / 1 partial / 2 heavy) and the model's Instances.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..layout import OCCLUSION_LEVELS

logger = logging.getLogger(__name__)

TASK = "miss_rate"  # key of this evaluator's results, beside COCOEvaluator's "bbox"
#: FPPI reference points: 10^-2, 10^-1.75, ..., 10^0.
REF_FPPI = np.logspace(-2.0, 0.0, 9)
#: A miss rate of 0 at a reference point counts as this in the log (the toolbox's floor).
MISS_FLOOR = 1e-10


@dataclass(frozen=True)
class Subset:
    """Which ground truth counts. Annotations of the class outside the limits are ignore regions;
    detections shorter than ``min_height / height_margin`` are dropped before matching."""

    name: str
    min_height: float = 0.0
    max_occlusion: int = 2
    height_margin: float = 1.0

    @property
    def metric(self) -> str:
        return f"MR-2 {self.name}"


def subsets_from_config(cfg) -> tuple[Subset, ...]:
    """The "all" and "reasonable" subsets of ``CADET.TEST.MISS_RATE``."""
    mr = cfg.CADET.TEST.MISS_RATE
    return (Subset("all"),
            Subset("reasonable", float(mr.MIN_HEIGHT), int(mr.MAX_OCCLUSION), float(mr.HEIGHT_MARGIN)))


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


def overlaps(det: np.ndarray, gt: np.ndarray, gt_ignore: np.ndarray) -> np.ndarray:
    """(D, G) overlap: IoU with a regular gt box; intersection / detection area with an ignore region.

    det: (D, 4), gt: (G, 4) XYXY; gt_ignore: (G,) bool.
    """
    lt = np.maximum(det[:, None, :2], gt[None, :, :2])
    rb = np.minimum(det[:, None, 2:], gt[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    a_det, a_gt = _areas(det)[:, None], _areas(gt)[None, :]
    denom = np.where(gt_ignore[None, :], a_det, a_det + a_gt - inter)
    return np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
                iou: float = 0.5) -> tuple[np.ndarray, int]:
    """Match one image's detections to its ground truth, highest score first.

    A detection takes the regular gt box (not yet matched) of highest IoU >= ``iou`` (the last
    such box in ``gt_boxes`` order on a tie): a true positive (1). Failing that, the first ignore region covering >= ``iou`` of the detection's
    area: ignored (-1); an ignore region can take any number of detections. Otherwise a false
    positive (0).

    det_boxes: (D, 4), det_scores: (D,), gt_boxes: (G, 4) XYXY_ABS, gt_ignore: (G,) bool.
    Returns (flags (D,) int in the detections' order, number of regular gt boxes).
    """
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_ignore = np.asarray(gt_ignore, dtype=bool).reshape(-1)
    flags = np.zeros(len(det_boxes), dtype=np.int64)
    regular, ignore = np.flatnonzero(~gt_ignore), np.flatnonzero(gt_ignore)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return flags, len(regular)
    oa = overlaps(det_boxes, gt_boxes, gt_ignore)
    on_ignore = (oa[:, ignore] >= iou).any(axis=1)
    flags[on_ignore] = -1  # unless a regular box takes the detection below
    candidates = (oa[:, regular] >= iou).any(axis=1)  # only these can be true positives
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable"):
        if not candidates[d]:
            continue
        free = regular[~taken[regular]]
        if len(free) and oa[d, free].max() >= iou:
            g = free[len(free) - 1 - np.argmax(oa[d, free][::-1])]  # equal overlaps: the last box, as evalRes
            taken[g], flags[d] = True, 1
    return flags, len(regular)


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


def ground_truth(annotations: list[dict], class_id: int, subset: Subset,
                 where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(boxes (G, 4) XYXY_ABS, ignore (G,) bool) of one image for ``subset``.

    Ignore regions: every ``iscrowd`` annotation (any class), and the class's annotations shorter
    than ``subset.min_height`` or more occluded than ``subset.max_occlusion``. Other classes'
    annotations are left out.
    """
    boxes, ignore = [], []
    for a in annotations:
        crowd = bool(a.get("iscrowd", 0))
        if a["category_id"] != class_id and not crowd:
            continue
        box = BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYXY_ABS)
        occ = a.get("occlusion", 0)
        if occ not in OCCLUSION_LEVELS:
            raise ValueError(f"{where}: annotation occlusion = {occ!r}; expected one of {OCCLUSION_LEVELS} "
                             "(0 none, 1 partial, 2 heavy)")
        boxes.append(box)
        ignore.append(crowd or box[3] - box[1] < subset.min_height or occ > subset.max_occlusion)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(ignore, dtype=bool)


def evaluate_subset(records: list[dict], predictions: dict, class_id: int, subset: Subset,
                    iou: float = 0.5) -> tuple[float, int]:
    """(MR^-2 in [0, 1], number of regular gt boxes) over ``records`` (dataset dicts) for ``subset``.

    predictions: {image_id: (boxes (D, 4) XYXY_ABS, scores (D,))} of the evaluated class, one
    entry per image evaluated (an image without detections has empty arrays).
    """
    all_scores, all_flags, num_pos = [], [], 0
    for r in records:
        boxes, scores = predictions[r["image_id"]]
        if len(boxes) and subset.min_height > 0:
            tall = boxes[:, 3] - boxes[:, 1] >= subset.min_height / subset.height_margin
            boxes, scores = boxes[tall], scores[tall]
        gt, ign = ground_truth(r.get("annotations", []), class_id, subset, where=r.get("file_name", ""))
        flags, n = match_image(boxes, scores, gt, ign, iou)
        all_scores.append(scores)
        all_flags.append(flags)
        num_pos += n
    mr, _ = log_average_miss_rate(np.concatenate(all_scores) if all_scores else np.zeros(0),
                                  np.concatenate(all_flags) if all_flags else np.zeros(0, dtype=np.int64),
                                  num_pos, len(records))
    return mr, num_pos


class MissRateEvaluator(DatasetEvaluator):
    """MR^-2 (in %, lower is better) of one class on one data set: ``{"miss_rate": {"MR-2 all": .,
    "MR-2 reasonable": .}}``, over the images processed (each one counts in FPPI)."""

    @configurable
    def __init__(self, dataset_name: str, *, class_name: str = "", subsets: tuple[Subset, ...] = (Subset("all"),),
                 iou: float = 0.5):
        self.dataset_name = dataset_name
        self.class_id = resolve_class(class_name, MetadataCatalog.get(dataset_name).get("thing_classes", []),
                                      dataset_name)
        self.subsets = tuple(subsets)
        self.iou = iou
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str) -> dict:
        mr = cfg.CADET.TEST.MISS_RATE
        return {"dataset_name": dataset_name, "class_name": mr.CLASS, "subsets": subsets_from_config(cfg),
                "iou": float(mr.IOU)}

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
        chosen = [records[i] for i in predictions]
        results = {}
        for subset in self.subsets:
            mr, num_pos = evaluate_subset(chosen, predictions, self.class_id, subset, self.iou)
            if num_pos == 0:
                logger.warning(f"[cadet] {self.dataset_name}: no ground truth of class {self.class_id} in subset "
                               f"{subset.name!r} of the {len(chosen)} images; its {subset.metric} is NaN")
            results[subset.metric] = 100.0 * mr
        return {TASK: results}
