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
    everyone = torch.ones(1, scores.numel(), dtype=torch.bool, device=scores.device)
    return group_bayes_fuse(scores, everyone, EPS)[0]


def group_bayes_fuse(scores: torch.Tensor, member: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`bayes_fuse` of each group at once: scores ``(K,)``, ``member`` ``(G, K)`` bool (row g:
    the scores of group g), clamped to [eps, 1 - eps] -> ``(G,)``. Scriptable (``eps`` passed in)."""
    s = scores.clamp(eps, 1.0 - eps).double()
    # in log space: products of many small scores do not underflow
    log_pos = torch.where(member, s.log()[None], 0.0).sum(1)
    log_neg = torch.where(member, (1.0 - s).log()[None], 0.0).sum(1)
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
    iou = box_iou(boxes.float(), boxes.float())
    same = (classes[:, None] == classes[None, :]) & (branch[:, None] != branch[None, :]) & (iou >= iou_thresh)
    return _proben(boxes, scores, classes, branch, same, int(max_dets), len(dets), EPS)


def _descending(x: torch.Tensor) -> torch.Tensor:
    """The indices of ``x`` (N,) by value, highest first, ties by index: a stable descending argsort
    that traces to ONNX (whose Sort has no stable flag) via the rank of each element, (N, N)."""
    idx = torch.arange(x.shape[0], device=x.device)
    ahead = (x[None, :] > x[:, None]) | ((x[None, :] == x[:, None]) & (idx[None, :] < idx[:, None]))
    return torch.argsort(ahead.sum(1))  # ranks are distinct: any sort gives the same order


@torch.jit.script_if_tracing
def _proben(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, branch: torch.Tensor,
            same: torch.Tensor, max_dets: int, num_branches: int, eps: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``merge_proben`` on the union (boxes (N, 4), scores (N,), classes (N,), branch (N,)), ``same``
    (N, N) bool: may match (same class, other branch, IoU >= the threshold); ``eps``: EPS.

    Written with tensors only (masks, ``where`` and one loop over the N detections in score order
    that only assigns each detection its group; no Python lists, no branches on values), so that
    a trace scripts it and the ONNX graph gets one Loop: the same detections in PyTorch,
    TorchScript and ONNX Runtime.
    """
    n = scores.shape[0]
    order = _descending(scores)  # from here on, detection k is the k-th highest
    boxes, scores, classes, branch = boxes[order], scores[order], classes[order], branch[order]
    same = same[order][:, order]
    slots = torch.arange(n, device=scores.device)
    # (B, N, N): [b, k, j] = j may join k's group and is of branch b
    by_branch = same[None] & (branch[None, None, :] == torch.arange(num_branches, device=scores.device)[:, None, None])
    used = torch.zeros(n, dtype=torch.bool, device=scores.device)
    group_of = slots.clone()  # (N,): the leader (slot) of each detection's group
    for k in range(n):
        lead = ~used[k]  # () bool: k starts a group
        cand = by_branch[:, k] & ~used[None] & lead  # (B, N)
        best = torch.argmax(torch.where(cand, scores[None], -1.0), dim=1)  # (B,)
        joins = ((slots[None] == best[:, None]) & cand.any(1)[:, None]).any(0)  # (N,)
        group_of = torch.where(joins, k, group_of)
        used = used | joins | ((slots == k) & lead)
    member = group_of[None, :] == slots[:, None]  # (N, N): [k, j] = j is in k's group
    w = torch.where(member, scores.clamp_min(eps)[None], 0.0)
    fused_boxes = (w @ boxes) / w.sum(1).clamp_min(eps)[:, None]
    alone = member.sum(1) <= 1
    out_boxes = torch.where(alone[:, None], boxes, fused_boxes)
    out_scores = torch.where(alone, scores, group_bayes_fuse(scores, member, eps))
    idx = (group_of == slots).nonzero().flatten()  # the leaders, in score order
    fused = out_scores[idx]
    top = _descending(fused)[:max_dets]
    return out_boxes[idx][top], fused[top], classes[idx][top]


# CADET.LATE.MERGE -> rule.
MERGE_RULES = {"nms": merge_nms, "proben": merge_proben}
