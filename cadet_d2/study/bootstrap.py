"""Paired bootstrap over test images for COCO box AP differences, exact and fast.

pycocotools' ``COCOeval.evaluate()`` runs once per run (per image and category: which detection
matches which ground truth at each IoU threshold). A bootstrap resample draws the test images
with replacement; an image drawn ``c`` times counts ``c`` times. Instead of re-running
``accumulate()`` on a list with repeated images, each detection gets the weight ``c`` of its
image: cumulative true/false positives become weighted cumulative sums over the detections
sorted by score, and ``npig`` (ground truths) a weighted sum. With every weight 1 this is exactly
COCOeval's AP (tested); with repeats it equals COCOeval on the repeated list (repeated detections
tie in score, and a run of tied copies only adds points on a segment that the precision envelope
makes irrelevant). Detections that are false positives at every IoU threshold are not kept one
by one: only their weighted count above each kept detection matters (:func:`_split`). AP is the
mean over IoU 0.50:0.95, the 101 recall points and the categories with ground truth in the
resample, in percent like Detectron2.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
EPS = np.spacing(1)


@dataclass
class CategoryEval:
    """One category's detections sorted by score, split in two: the K *kept* ones (a true
    positive or ignored at some IoU threshold) and the F others, false positives at every
    threshold, which only matter through how many lie before each kept one (``fp_gap``)."""

    img: np.ndarray  # (K,) image index (canonical order) of each kept detection
    tp: np.ndarray  # (T, K) float: true positive at each IoU threshold
    fp: np.ndarray  # (T, K) float
    fp_img: np.ndarray  # (F,) image index of each always-false-positive detection
    fp_gap: np.ndarray  # (F,) number of kept detections ranked above it (0..K)
    npig: np.ndarray  # (n_images,) ground truths that count


@dataclass
class PerImageEval:
    """A run's per-image COCO evaluation on one test set."""

    images: list[str]  # canonical image order: sorted file names
    categories: list[CategoryEval]


def per_image_eval(gt_json: str, dt_json: str) -> PerImageEval:
    """Evaluate once per image (pycocotools, bbox, all areas, 100 detections per image)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        with open(dt_json, encoding="utf-8") as f:
            dets = json.load(f)
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:  # loadRes cannot take an empty list; an empty result set has no detections
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
        ev.evaluate()
    img_ids = list(ev.params.imgIds)
    names = {i: gt.imgs[i].get("file_name", str(i)) for i in img_ids}
    order = sorted(img_ids, key=lambda i: names[i])
    pos = {i: k for k, i in enumerate(order)}
    n_img, n_thr = len(img_ids), len(ev.params.iouThrs)
    cats = []
    for k, _ in enumerate(ev.params.catIds):
        scores, img, tps, fps = [], [], [], []
        npig = np.zeros(n_img)
        for i, img_id in enumerate(img_ids):
            e = ev.evalImgs[k * n_img + i]
            if e is None:
                continue
            gt_ig = np.asarray(e["gtIgnore"], dtype=bool)
            npig[pos[img_id]] = np.count_nonzero(~gt_ig)
            d = len(e["dtScores"])
            if d:
                m = np.asarray(e["dtMatches"]).reshape(n_thr, d) > 0
                ig = np.asarray(e["dtIgnore"], dtype=bool).reshape(n_thr, d)
                scores.append(np.asarray(e["dtScores"]))
                img.append(np.full(d, pos[img_id]))
                tps.append(m & ~ig)
                fps.append(~m & ~ig)
        if scores:
            s = np.concatenate(scores)
            idx = np.argsort(-s, kind="mergesort")  # as COCOeval.accumulate
            cats.append(_split(np.concatenate(img)[idx], np.concatenate(tps, 1)[:, idx],
                               np.concatenate(fps, 1)[:, idx], npig))
        else:
            cats.append(_split(np.zeros(0, int), np.zeros((n_thr, 0), bool), np.zeros((n_thr, 0), bool), npig))
    return PerImageEval([names[i] for i in order], cats)


def _split(img: np.ndarray, tp: np.ndarray, fp: np.ndarray, npig: np.ndarray) -> CategoryEval:
    """Keep the detections that are not a false positive at every threshold. The others cannot
    change the interpolated precision at a recall threshold (their points have the recall of
    the kept detection above them and a lower precision); they only add to the false positives
    of the kept detections below them."""
    keep = ~fp.all(axis=0)
    gap = np.cumsum(keep)[~keep]
    return CategoryEval(img[keep], tp[:, keep].astype(float), fp[:, keep].astype(float), img[~keep], gap, npig)


def _category_ap(c: CategoryEval, weights: np.ndarray, chunk_elems: int = 4_000_000) -> np.ndarray:
    """AP (0-1) of one category for each row of ``weights`` (B, n_images); NaN where no ground truth."""
    b_all = weights.shape[0]
    npig = weights @ c.npig
    out = np.zeros(b_all)
    t, d = c.tp.shape
    if d == 0:
        return np.where(npig > 0, 0.0, np.nan)
    r = len(REC_THRS)
    starts = np.flatnonzero(np.r_[True, np.diff(c.fp_gap) > 0]) if len(c.fp_gap) else np.zeros(0, int)
    step = max(1, chunk_elems // max(t * d, len(c.fp_gap), 1))
    for s in range(0, b_all, step):
        w = weights[s:s + step][:, c.img]  # (b, K)
        b = w.shape[0]
        gap = np.zeros((b, d + 1))  # weighted always-false positives ranked above kept detection j
        if len(starts):
            gap[:, c.fp_gap[starts]] = np.add.reduceat(weights[s:s + step][:, c.fp_img], starts, axis=1)
        tp = np.cumsum(w[:, None, :] * c.tp[None], axis=2)  # (b, T, K)
        fp = np.cumsum(w[:, None, :] * c.fp[None] + gap[:, None, :d], axis=2)
        n = np.maximum(npig[s:s + step], EPS)[:, None, None]
        rc = tp / n
        pr = tp / (tp + fp + EPS)
        pr = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]  # precision envelope
        # COCO: idx = searchsorted(rc[b, t], REC_THRS, "left"), i.e. the first detection with
        # rc >= thr. With cnt = how many thresholds are <= rc (exact float comparisons), that is
        # the first detection with cnt >= r + 1: one integer searchsorted for every (b, t) row,
        # the rows shifted apart by r + 2.
        cnt = np.searchsorted(REC_THRS, rc.ravel(), side="right").reshape(b * t, d)
        off = (r + 2) * np.arange(b * t)[:, None]
        idx = np.searchsorted((cnt + off).ravel(), (np.arange(1, r + 1)[None, :] + off).ravel(), side="left")
        idx = idx.reshape(b, t, r) - (np.arange(b * t) * d).reshape(b, t, 1)
        q = np.take_along_axis(pr, np.minimum(idx, d - 1), axis=2)
        q[idx >= d] = 0.0
        out[s:s + step] = q.mean(axis=(1, 2))
    return np.where(npig > 0, out, np.nan)


def resampled_ap(ev: PerImageEval, weights: np.ndarray) -> np.ndarray:
    """Box AP in percent for each row of ``weights`` (B, n_images in ``ev.images`` order)."""
    per_cat = np.stack([_category_ap(c, weights) for c in ev.categories])  # (K, B)
    with np.errstate(invalid="ignore"), contextlib.suppress(RuntimeWarning):
        valid = ~np.isnan(per_cat)
        total = np.where(valid, per_cat, 0.0).sum(0)
        count = valid.sum(0)
    return np.where(count > 0, 100.0 * total / np.maximum(count, 1), np.nan)


def resample_weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_images) counts: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=resamples).astype(float)


def inference_files(run_dir: str, dataset: str) -> Optional[tuple[str, str]]:
    """(ground truth json, detections json) that COCOEvaluator wrote for ``dataset``."""
    folder = os.path.join(run_dir, "inference", dataset)
    gt, dt = os.path.join(folder, f"{dataset}_coco_format.json"), os.path.join(folder, "coco_instances_results.json")
    return (gt, dt) if os.path.isfile(gt) and os.path.isfile(dt) else None


class PairedBootstrap:
    """Paired bootstrap of AP(arm) - AP(baseline) over the images of one test set.

    Every arm uses the same resamples (same seed, same canonical image order). Seeds are pooled:
    the AP of an arm in a resample is the mean over its seeds of each seed's AP on that resample.
    """

    def __init__(self, resamples: int = 1000, seed: int = 0, level: float = 0.95):
        self.resamples, self.seed, self.level = resamples, seed, level
        self._images: Optional[list[str]] = None
        self._weights: Optional[np.ndarray] = None
        self._cache: dict[str, np.ndarray] = {}

    def arm_ap(self, run_dirs: Sequence[str], dataset: str) -> Optional[np.ndarray]:
        """(resamples + 1,) mean-over-seeds AP: row 0 is the full test set, then each resample.
        Runs without prediction files are left out (:meth:`runs_with_predictions` says which)."""
        per_seed = []
        for d in run_dirs:
            key = f"{d}::{dataset}"
            if key not in self._cache:
                files = inference_files(d, dataset)
                if files is None:
                    continue
                ev = per_image_eval(*files)
                if self._images is None:
                    self._images = ev.images
                    w = resample_weights(len(ev.images), self.resamples, self.seed)
                    self._weights = np.vstack([np.ones((1, len(ev.images))), w])
                if ev.images != self._images:
                    raise ValueError(f"{d}: the {dataset} images differ from the other runs' (not paired)")
                self._cache[key] = resampled_ap(ev, self._weights)
            per_seed.append(self._cache[key])
        return np.mean(per_seed, axis=0) if per_seed else None

    @staticmethod
    def runs_with_predictions(run_dirs: Sequence[str], dataset: str) -> list[str]:
        """The runs whose ``inference/<dataset>/`` files the interval pools."""
        return [d for d in run_dirs if inference_files(d, dataset) is not None]

    def delta_interval(self, arm_dirs: Sequence[str], base_dirs: Sequence[str], dataset: str) -> Optional[dict]:
        """{delta (full set), lo, hi, p_gt0, resamples, arm_runs, base_runs} of AP(arm) - AP(baseline),
        or None without predictions; ``arm_runs``/``base_runs``: how many runs it pools."""
        a, b = self.arm_ap(arm_dirs, dataset), self.arm_ap(base_dirs, dataset)
        if a is None or b is None:
            return None
        diff = a - b
        boot = diff[1:][~np.isnan(diff[1:])]
        if not len(boot):
            return None
        alpha = (1.0 - self.level) / 2
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        return {"delta": float(diff[0]), "lo": float(lo), "hi": float(hi), "p_gt0": float(np.mean(boot > 0)),
                "resamples": int(len(boot)), "arm_runs": len(self.runs_with_predictions(arm_dirs, dataset)),
                "base_runs": len(self.runs_with_predictions(base_dirs, dataset))}
