"""Speed and memory of a detector: train or inference images/s, peak memory, GFLOPs.

Inputs are random (C, H, W) images at a fixed size with a few random boxes, so the figures
measure the model (and optimizer), not data loading.
"""
from __future__ import annotations

import platform
import resource
import time

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage


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


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(cfg, mode: str = "train", iters: int = 10, warmup: int = 3, batch: int = 2,
              height: int = 301, width: int = 391, flops: bool = False) -> dict:
    """Time ``iters`` steps after ``warmup`` of ``mode`` (train: forward + backward + SGD step;
    infer: forward in eval mode without grad). Returns a JSON-ready dict."""
    if mode not in ("train", "infer"):
        raise ValueError(f"mode must be 'train' or 'infer', got {mode!r}")
    torch.manual_seed(0)
    model = build_model(cfg)
    device = model.device
    channels = len(cfg.MODEL.PIXEL_MEAN)
    data = random_batch(batch, channels, height, width)
    amp = cfg.SOLVER.AMP.ENABLED and device.type == "cuda"
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    model.train(mode == "train")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, enabled=amp):
            if mode == "train":
                loss = sum(model(data).values())
            else:
                with torch.no_grad():
                    model(data)
                return
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    times = []
    with EventStorage(0):
        for i in range(warmup + iters):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    result = {
        "mode": mode, "images_per_s": batch / sec, "median_step_s": sec, "mean_step_s": sum(times) / len(times),
        "peak_memory_mb": _peak_memory_mb(device), "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda"
        else "process_peak_rss", "batch": batch, "height": height, "width": width, "iters": iters, "warmup": warmup,
        "device": str(device), "amp": amp, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "backbone_size": cfg.CADET.BACKBONE.SIZE,
        "backbone": cfg.MODEL.BACKBONE.NAME, "fusion": cfg.CADET.FUSION.NAME, "stages": list(cfg.CADET.FUSION.STAGES),
        "checkpoint_stages": list(cfg.CADET.BACKBONE.CHECKPOINT_STAGES),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    if flops:
        from .params import detector_stats

        result["gflops_per_image"] = detector_stats(cfg, height, width)["gflops"]
    return result
