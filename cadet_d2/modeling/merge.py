"""Merge rules of late fusion: the detections of several detectors on one image -> one set.

Each rule takes one ``(boxes, scores, classes)`` triple per branch — boxes ``(N_i, 4)`` XYXY,
scores ``(N_i,)`` in [0, 1], classes ``(N_i,)`` int64 — and returns one triple of ``(M, 4)``,
``(M,)``, ``(M,)``, sorted by score (highest first), ``M <= max_dets`` and ``M <= sum N_i``.
Rules are looked up by name in ``MERGE_RULES`` (``CADET.LATE.MERGE``).
"""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_iou

Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# Scores are kept in [EPS, 1 - EPS] before Bayes' rule, so that a score of exactly 0 or 1 never
# decides a fused score alone (0 / 0).
EPS = 1e-6


def _union(dets: list[Detections]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the branches: boxes (N, 4), scores (N,), classes (N,), branch index (N,)."""
    boxes = torch.cat([d[0].reshape(-1, 4) for d in dets])
    scores = torch.cat([d[1].reshape(-1) for d in dets])
    classes = torch.cat([d[2].reshape(-1) for d in dets]).long()
    branch = torch.cat([torch.full((d[1].numel(),), i, dtype=torch.long, device=scores.device)
                        for i, d in enumerate(dets)])
    return boxes, scores, classes, branch


def merge_nms(dets: list[Detections], iou_thresh: float, max_dets: int) -> Detections:
    """Union of all branches, then class-wise NMS at ``iou_thresh``; the ``max_dets`` best kept."""
    boxes, scores, classes, _ = _union(dets)
    keep = batched_nms(boxes.float(), scores.float(), classes, iou_thresh)[:max_dets]
    return boxes[keep], scores[keep], classes[keep]


def bayes_fuse(scores: torch.Tensor) -> torch.Tensor:
    """Bayes' rule for detectors independent given the class, uniform prior over object / not:
    ``s = prod s_i / (prod s_i + prod (1 - s_i))``, scores ``(K,)`` clamped to [EPS, 1 - EPS] -> scalar."""
    s = scores.clamp(EPS, 1.0 - EPS).double()
    # in log space: products of many small scores do not underflow
    log_pos, log_neg = s.log().sum(), (1.0 - s).log().sum()
    return torch.sigmoid(log_pos - log_neg).to(scores.dtype)


def merge_proben(dets: list[Detections], iou_thresh: float, max_dets: int) -> Detections:
    """Probabilistic ensembling (ProbEn; Chen et al., ECCV 2022).

    Greedy matching, highest score first: a detection not yet used starts a group and takes, from
    every other branch, that branch's highest-scoring unused detection of the same class whose IoU
    with it is >= ``iou_thresh`` (at most one per branch). A group's score is ``bayes_fuse`` of its
    scores, its box the score-weighted mean ``sum s_i b_i / sum s_i``; a detection matched with
    nothing keeps its own score and box. The ``max_dets`` best groups are returned.
    """
    boxes, scores, classes, branch = _union(dets)
    n = scores.numel()
    if n == 0:
        return boxes, scores, classes
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes.float(), boxes.float())
    same = (classes[:, None] == classes[None, :]) & (branch[:, None] != branch[None, :]) & (iou >= iou_thresh)
    used = torch.zeros(n, dtype=torch.bool, device=scores.device)
    out_boxes, out_scores, out_classes = [], [], []
    for i in order.tolist():
        if used[i]:
            continue
        group = [i]
        used[i] = True
        for b in range(len(dets)):
            if b == int(branch[i]):
                continue
            cand = (same[i] & (branch == b) & ~used).nonzero().flatten()
            if cand.numel():
                j = int(cand[scores[cand].argmax()])
                group.append(j)
                used[j] = True
        g = torch.tensor(group, device=scores.device)
        s = scores[g]
        if len(group) == 1:
            out_boxes.append(boxes[i])
            out_scores.append(scores[i])
        else:
            w = s.clamp_min(EPS)
            out_boxes.append((boxes[g] * w[:, None]).sum(0) / w.sum())
            out_scores.append(bayes_fuse(s))
        out_classes.append(classes[i])
    fused_scores = torch.stack(out_scores)
    top = torch.argsort(fused_scores, descending=True, stable=True)[:max_dets]
    return torch.stack(out_boxes)[top], fused_scores[top], torch.stack(out_classes)[top]


# CADET.LATE.MERGE -> rule.
MERGE_RULES = {"nms": merge_nms, "proben": merge_proben}
