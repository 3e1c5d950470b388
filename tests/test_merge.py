"""Late-fusion merge rules (cadet_d2/modeling/merge.py) on hand-worked cases."""
from __future__ import annotations

import pytest
import torch

from cadet_d2.layout import LATE_MERGE_RULES
from cadet_d2.modeling.merge import MERGE_RULES, bayes_fuse, merge_nms, merge_proben


def dets(boxes, scores, classes):
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores, dtype=torch.float32),
            torch.tensor(classes, dtype=torch.long))


EMPTY = dets([], [], [])


def test_rule_names_match_config_choices():
    assert set(MERGE_RULES) == set(LATE_MERGE_RULES)


def test_proben_two_overlapping_boxes():
    # IoU of [0,0,10,10] and [2,0,12,10] = 80 / 120 = 0.667
    a, b = dets([[0, 0, 10, 10]], [0.8], [0]), dets([[2, 0, 12, 10]], [0.6], [0])
    boxes, scores, classes = merge_proben([a, b], 0.5, 100)
    # 0.8 * 0.6 / (0.8 * 0.6 + 0.2 * 0.4) = 0.48 / 0.56
    assert scores.tolist() == pytest.approx([0.48 / 0.56], abs=1e-6)
    # (0 * 0.8 + 2 * 0.6) / 1.4 and (10 * 0.8 + 12 * 0.6) / 1.4
    assert boxes.tolist()[0] == pytest.approx([1.2 / 1.4, 0.0, 15.2 / 1.4, 10.0], abs=1e-5)
    assert classes.tolist() == [0]


def test_proben_two_low_scores_agree_lower():
    # two detectors both at 0.3: Bayes' rule under independence gives 0.09 / (0.09 + 0.49)
    a, b = dets([[0, 0, 10, 10]], [0.3], [0]), dets([[0, 0, 10, 10]], [0.3], [0])
    _, scores, _ = merge_proben([a, b], 0.5, 100)
    assert scores.tolist() == pytest.approx([0.09 / 0.58], abs=1e-6)


def test_proben_no_overlap_keeps_both():
    a, b = dets([[0, 0, 10, 10]], [0.7], [0]), dets([[20, 20, 30, 30]], [0.9], [0])
    boxes, scores, classes = merge_proben([a, b], 0.5, 100)
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert boxes.tolist() == [[20, 20, 30, 30], [0, 0, 10, 10]]


def test_proben_different_classes_not_merged():
    a, b = dets([[0, 0, 10, 10]], [0.7], [0]), dets([[0, 0, 10, 10]], [0.6], [1])
    _, scores, classes = merge_proben([a, b], 0.5, 100)
    assert scores.tolist() == pytest.approx([0.7, 0.6]) and classes.tolist() == [0, 1]


def test_proben_same_branch_never_merged_one_per_branch():
    # branch a has two overlapping boxes (its own NMS kept them): each may take at most one of b's
    a = dets([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.5], [0, 0])
    b = dets([[0, 0, 10, 10]], [0.8], [0])
    _, scores, _ = merge_proben([a, b], 0.5, 100)
    assert scores.tolist() == pytest.approx([0.72 / (0.72 + 0.02), 0.5], abs=1e-6)


def test_proben_threshold_and_top_k():
    a, b = dets([[0, 0, 10, 10]], [0.8], [0]), dets([[2, 0, 12, 10]], [0.6], [0])
    assert len(merge_proben([a, b], 0.7, 100)[1]) == 2  # IoU 0.667 < 0.7: not matched
    a3 = dets([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], [0.1, 0.2, 0.3], [0, 0, 0])
    assert merge_proben([a3, EMPTY], 0.5, 2)[1].tolist() == pytest.approx([0.3, 0.2])


def test_score_clamp():
    assert 0.0 < float(bayes_fuse(torch.tensor([1.0, 0.0]))) < 1.0
    assert float(bayes_fuse(torch.tensor([1.0, 1.0]))) == pytest.approx(1.0)


@pytest.mark.parametrize("rule", [merge_proben, merge_nms])
def test_empty_inputs(rule):
    boxes, scores, classes = rule([EMPTY, EMPTY], 0.5, 100)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)
    a = dets([[0, 0, 10, 10]], [0.7], [0])
    boxes, scores, _ = rule([a, EMPTY], 0.5, 100)
    assert boxes.tolist() == [[0, 0, 10, 10]] and scores.tolist() == pytest.approx([0.7])


def test_nms_union_classwise():
    a = dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.8, 0.5], [0, 1])
    b = dets([[1, 0, 11, 10], [30, 30, 40, 40]], [0.6, 0.4], [0, 0])
    boxes, scores, classes = merge_nms([a, b], 0.5, 100)
    # class 0: 0.6 suppressed by 0.8 (IoU 0.82); class 1 and the far box kept
    assert scores.tolist() == pytest.approx([0.8, 0.5, 0.4]) and classes.tolist() == [0, 1, 0]
    assert len(merge_nms([a, b], 0.5, 2)[1]) == 2


def greedy_proben(dets_, iou_thresh, max_dets):
    """ProbEn's greedy matching written plainly with Python lists: the reference for merge_proben."""
    from torchvision.ops import box_iou

    boxes = torch.cat([d[0] for d in dets_])
    scores = torch.cat([d[1] for d in dets_])
    classes = torch.cat([d[2] for d in dets_])
    branch = [b for b, d in enumerate(dets_) for _ in range(len(d[1]))]
    iou = box_iou(boxes, boxes)
    used, groups = set(), []
    for i in sorted(range(len(scores)), key=lambda i: -float(scores[i])):
        if i in used:
            continue
        group = [i]
        used.add(i)
        for b in range(len(dets_)):
            cand = [j for j in range(len(scores)) if branch[j] == b != branch[i] and j not in used
                    and int(classes[j]) == int(classes[i]) and float(iou[i, j]) >= iou_thresh]
            if cand:
                j = max(cand, key=lambda j: float(scores[j]))
                group.append(j)
                used.add(j)
        groups.append(group)
    out = []
    for g in groups:
        s = scores[g]
        box = boxes[g[0]] if len(g) == 1 else (boxes[g] * s[:, None]).sum(0) / s.sum()
        out.append((float(bayes_fuse(s)) if len(g) > 1 else float(s[0]), box.tolist(), int(classes[g[0]])))
    out.sort(key=lambda o: -o[0])
    return out[:max_dets]


@pytest.mark.parametrize("seed", range(5))
def test_proben_equals_plain_greedy_matching(seed):
    """Three branches of random, crowded detections of two classes: merge_proben (tensor-only, as it
    is traced for export) gives the plainly written greedy matching's groups, scores and boxes."""
    g = torch.Generator().manual_seed(seed)
    branches = []
    for n in (12, 9, 7):
        xy = torch.rand(n, 2, generator=g) * 40
        wh = 10 + torch.rand(n, 2, generator=g) * 10
        branches.append((torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g) * 0.98 + 0.01,
                         torch.randint(0, 2, (n,), generator=g)))
    want = greedy_proben(branches, 0.4, 20)
    boxes, scores, classes = merge_proben(branches, 0.4, 20)
    assert len(want) == 20 and len(scores) == 20
    assert scores.tolist() == pytest.approx([w[0] for w in want], abs=1e-6)
    assert classes.tolist() == [w[2] for w in want]
    assert boxes.tolist() == [pytest.approx(w[1], abs=1e-4) for w in want]
    assert len(merge_proben(branches, 0.4, 100)[1]) < 28  # some groups did form
