"""Speed and memory of a detector: train or inference images/s, peak memory, GFLOPs.

Inputs are random (C, H, W) images at a fixed size with a few random boxes, so the figures
measure the model (and optimizer), not data loading. The training step is the trainer's own
(:class:`~cadet_d2.engine.step.AccumAMPTrainer`): ``SOLVER.AMP.ENABLED`` /
``CADET.SOLVER.AMP_DTYPE`` set the precision, ``SOLVER.ACCUM_STEPS`` the micro-batches per
optimizer step (``batch`` images each), ``CADET.BACKBONE.CHECKPOINT_STAGES`` and
``CADET.BACKBONE.COMPILE`` act through the model.
"""
from __future__ import annotations

import gc
import itertools
import os
import resource
import time

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..utils.machine import machine_label
from ..utils.params import count_params
from ..utils.timing import alternating_timings, profile_step, sync, upper_median


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


def measure_peak_tensor_memory(step, model: torch.nn.Module, optimizer, data: list[dict],
                               device: torch.device) -> dict:
    """Peak live tensor memory (MiB) of one ``step()`` (see :mod:`cadet_d2.utils.memory`): the
    state alive before it (weights, buffers, gradients, optimizer state, inputs) and the peak."""
    from ..utils.memory import TensorMemoryTracker, training_state_tensors

    gc.collect()
    tracker = TensorMemoryTracker(device.type)
    tracker.track(training_state_tensors(model, optimizer) + [d["image"] for d in data])
    state = tracker.live_bytes
    with tracker:
        step()
    return {"peak_tensor_mb": tracker.peak_bytes / 2**20, "state_tensor_mb": state / 2**20,
            "activation_peak_mb": (tracker.peak_bytes - state) / 2**20}


def benchmark(cfg, mode: str = "train", iters: int = 10, warmup: int = 3, batch: int = 2,
              height: int = 301, width: int = 391, flops: bool = False, memory: bool = False,
              profile: int = 0) -> dict:
    """Time ``iters`` steps after ``warmup`` of ``mode`` (train: forward + backward + SGD step
    over ``SOLVER.ACCUM_STEPS`` micro-batches of ``batch`` images; infer: forward in eval mode
    without grad). ``memory``: also the peak tensor memory of one more step; ``profile`` > 0:
    the top ``profile`` ops of one more step. Returns a JSON-ready dict."""
    from ..engine.precision import resolve_precision
    from ..engine.step import AccumAMPTrainer

    if mode not in ("train", "infer"):
        raise ValueError(f"mode must be 'train' or 'infer', got {mode!r}")
    load_before = os.getloadavg()
    torch.manual_seed(0)
    model = build_model(cfg)
    device = model.device
    channels = len(cfg.MODEL.PIXEL_MEAN)
    data = random_batch(batch, channels, height, width)
    precision = resolve_precision(cfg)
    accum = int(cfg.SOLVER.ACCUM_STEPS) if mode == "train" else 1
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if mode == "train":
        trainer = AccumAMPTrainer(model, itertools.repeat(data), opt, accum_steps=accum, precision=precision)
        step = trainer.run_step
    else:
        model.eval()

        def step() -> None:
            with torch.no_grad(), precision.autocast():
                model(data)

    times = []
    with EventStorage(0):
        for i in range(warmup + iters):
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t0)
        timed = times[warmup:]
        result_extra: dict = {}
        if memory:
            result_extra.update(measure_peak_tensor_memory(step, model, opt, data, device))
        if profile:
            result_extra["profile"] = profile_step(step, device, profile)
    sec = upper_median(timed)
    images = batch * accum
    result = {
        "mode": mode, "images_per_s": images / sec, "median_step_s": sec, "mean_step_s": sum(timed) / len(timed),
        "first_step_s": times[0], "step_times_s": timed,
        "peak_memory_mb": _peak_memory_mb(device), "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda"
        else "process_peak_rss", "batch": batch, "accum_steps": accum, "images_per_step": images,
        "height": height, "width": width, "iters": iters, "warmup": warmup,
        "device": str(device), "precision": precision.name, "amp": precision.enabled,
        "compile": bool(cfg.CADET.BACKBONE.COMPILE), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": machine_label(), "cpus": os.cpu_count(), "load_avg_before": load_before[0],
        "load_avg_after": os.getloadavg()[0], "backbone_size": cfg.CADET.BACKBONE.SIZE,
        "backbone": cfg.MODEL.BACKBONE.NAME, "fusion": cfg.CADET.FUSION.NAME, "stages": list(cfg.CADET.FUSION.STAGES),
        "checkpoint_stages": list(cfg.CADET.BACKBONE.CHECKPOINT_STAGES),
        "params_m": count_params(model) / 1e6,
        **result_extra,
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    if flops:
        from ..utils.params import detector_stats

        result["gflops_per_image"] = detector_stats(cfg, height, width)["gflops"]
    return result


def paired_benchmark(cfgs: dict, rounds: int = 5, warmup: int = 1, batch: int = 2, height: int = 301,
                     width: int = 391) -> dict:
    """Training steps of several configs in one process, alternating A, B, C, A, B, C, ...

    On a shared machine the load drifts over minutes; alternating puts every setting under the
    same drift. Returns per setting the median step, images/s, and the median over rounds of its
    step time divided by the first setting's in the same round (``ratio_to_first``).
    """
    from ..engine.precision import resolve_precision
    from ..engine.step import AccumAMPTrainer

    steps = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        model = build_model(cfg)
        data = random_batch(batch, len(cfg.MODEL.PIXEL_MEAN), height, width)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        steps[name] = (AccumAMPTrainer(model, itertools.repeat(data), opt, accum_steps=int(cfg.SOLVER.ACCUM_STEPS),
                                       precision=resolve_precision(cfg)), batch * int(cfg.SOLVER.ACCUM_STEPS))
    with EventStorage(0):
        times, _ = alternating_timings({n: trainer.run_step for n, (trainer, _) in steps.items()}, rounds, warmup)
    first = next(iter(cfgs))
    out = {"rounds": rounds, "batch": batch, "height": height, "width": width, "threads": torch.get_num_threads(),
           "machine": machine_label(), "load_avg_after": os.getloadavg()[0], "settings": {}}
    for name, ts in times.items():
        med = upper_median(ts)
        out["settings"][name] = {"median_step_s": med, "images_per_s": steps[name][1] / med, "step_times_s": ts,
                                 "ratio_to_first": upper_median([a / b for a, b in zip(ts, times[first])])}
    return out
