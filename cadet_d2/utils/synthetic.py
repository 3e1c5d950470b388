"""Synthetic training batches: random images with random boxes, for benchmarks and probes."""
from __future__ import annotations

import torch
from detectron2.structures import Boxes, Instances


def random_batch(batch: int, channels: int, height: int, width: int, boxes: int = 3, seed: int = 0) -> list[dict]:
    """``batch`` dicts with a uniform random ``image`` (C, H, W) in [0, 255] and ``boxes`` GT boxes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        xy = torch.rand(boxes, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = 12 + torch.rand(boxes, 2, generator=g) * torch.tensor([width * 0.25, height * 0.25])
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.zeros(boxes, dtype=torch.int64)
        out.append({"image": torch.rand(channels, height, width, generator=g) * 255, "instances": inst,
                    "height": height, "width": width})
    return out
