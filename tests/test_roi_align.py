"""FastBackwardROIAlign: torchvision's forward exactly, torchvision's backward to float rounding;
CadetROIHeads trains like StandardROIHeads."""
from __future__ import annotations

import itertools

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torchvision.ops import roi_align

from cadet_d2.modeling.poolers import FastBackwardROIPooler
from cadet_d2.modeling.roi_align import FastBackwardROIAlign
from conftest import tiny_cfg


def random_rois(n_rois: int, height: int, width: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """(n_rois, 5) RoIs in image coordinates: tiny to larger than the map, some partly or fully
    outside it, a few degenerate (x1 < x0)."""
    size = torch.tensor([width, height]) / scale
    centre = torch.rand(n_rois, 2, generator=gen) * size * 1.8 - 0.4 * size
    extent = torch.exp(torch.rand(n_rois, 2, generator=gen) * 6 - 3) * size / 4
    extent[:3] = 0.01 / scale  # tiny
    extent[3] = size * 1.5  # larger than the map
    extent[4, 0] = -1.0 / scale  # x1 < x0
    extent[7, 1] = 0.0  # zero height
    boxes = torch.cat([centre - extent / 2, centre + extent / 2], 1)
    boxes[5] = torch.tensor([-3.0, -3.0, -0.5, -0.5]) / scale  # fully outside, before the map
    boxes[6] = torch.cat([size + 2 / scale, size + 5 / scale])  # fully outside, after it
    batch = torch.randint(0, 2, (n_rois, 1), generator=gen).float()
    return torch.cat([batch, boxes], 1)


CASES = list(itertools.product([(7, 9), (1, 1), (13, 20), (40, 52)], [0, 2], [True, False], [1.0, 0.25, 0.0625]))


@pytest.mark.parametrize("hw,sampling_ratio,aligned,scale", CASES)
def test_matches_torchvision(hw, sampling_ratio, aligned, scale):
    gen = torch.Generator().manual_seed(hash((hw, sampling_ratio, aligned, scale)) % 2**31)
    channels = 3 + (hw[0] % 6)
    x = torch.randn(2, channels, *hw, generator=gen, requires_grad=True)
    rois = random_rois(48, hw[0], hw[1], scale, gen)
    ours = FastBackwardROIAlign((7, 7), scale, sampling_ratio, aligned)(x, rois)
    ref = roi_align(x, rois, (7, 7), scale, sampling_ratio, aligned)
    assert torch.equal(ours, ref)
    grad_out = torch.randn(ref.shape, generator=gen)
    (g_ours,) = torch.autograd.grad(ours, x, grad_out)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    assert g_ref.abs().max() > 0
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-5 * float(g_ref.abs().max()))


def test_no_rois_and_no_grad():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    m = FastBackwardROIAlign((7, 7), 0.5, 0, True)
    out = m(x, torch.zeros(0, 5))
    assert out.shape == (0, 4, 7, 7)
    (g,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    assert g is None or not g.any()
    with torch.no_grad():  # inference: torchvision's op itself
        rois = torch.tensor([[1.0, 0.0, 0.0, 9.0, 7.0]])
        assert torch.equal(m(x, rois), roi_align(x, rois, (7, 7), 0.5, 0, True))


def test_bf16_autocast_gradient_matches():
    x = torch.randn(2, 6, 13, 20, requires_grad=True)
    rois = random_rois(32, 13, 20, 0.25, torch.Generator().manual_seed(3))
    grads = []
    ref = lambda a, b: roi_align(a, b.to(a.dtype), (7, 7), 0.25, 0, True)  # noqa: E731  (what Detectron2's ROIAlign calls)
    for op in (FastBackwardROIAlign((7, 7), 0.25, 0, True), ref):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = op(x.to(torch.bfloat16), rois)
        grads.append(torch.autograd.grad(out.float().square().sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-2, atol=1e-2)


def test_pooler_levels():
    pooler = FastBackwardROIPooler(7, (0.25, 0.125), 0, "ROIAlignV2")
    assert all(isinstance(p, FastBackwardROIAlign) and p.aligned for p in pooler.level_poolers)
    assert [p.spatial_scale for p in pooler.level_poolers] == [0.25, 0.125]
    assert not list(pooler.parameters())


def tiny_batch(gen: torch.Generator) -> list[dict]:
    batch = []
    for _ in range(2):
        inst = Instances((64, 80))
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 8.0, 40.0, 50.0], [45.0, 20.0, 70.0, 60.0]]))
        inst.gt_classes = torch.zeros(2, dtype=torch.int64)
        batch.append({"image": torch.randint(0, 255, (5, 64, 80), generator=gen).float(), "instances": inst,
                      "height": 64, "width": 80})
    return batch


def train_losses(cfg) -> tuple[list[dict], set]:
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(2):
        torch.manual_seed(2)  # the same proposal sampling in both runs
        with EventStorage():
            loss = model(tiny_batch(gen))
        opt.zero_grad()
        sum(loss.values()).backward()
        opt.step()
        losses.append({k: float(v) for k, v in loss.items()})
    return losses, set(model.state_dict())


def test_training_matches_standard_roi_heads(tmp_path, one_thread):
    opts = ("CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum")
    ours = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *opts)
    assert ours.MODEL.ROI_HEADS.NAME == "CadetROIHeads" and ours.CADET.ROI.FAST_ALIGN_BACKWARD
    model = build_model(ours)
    assert all(isinstance(p, FastBackwardROIAlign) for p in model.roi_heads.box_pooler.level_poolers)
    std = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *opts, "MODEL.ROI_HEADS.NAME", "StandardROIHeads")
    (l_ours, keys_ours), (l_std, keys_std) = train_losses(ours), train_losses(std)
    assert keys_ours == keys_std
    for a, b in zip(l_ours, l_std):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (k, a, b)
    assert l_ours[0] != l_ours[1]  # the step changed the model
