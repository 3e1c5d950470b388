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
from detectron2.utils.events import EventStorage

from ..utils.machine import machine_label
from ..utils.params import count_params
from ..utils.synthetic import random_batch
from ..utils.timing import alternating_timings, profile_step, sync, upper_median


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
              profile: int = 0, step_profile: str = "") -> dict:
    """Time ``iters`` steps after ``warmup`` of ``mode`` (train: forward + backward + SGD step
    over ``SOLVER.ACCUM_STEPS`` micro-batches of ``batch`` images; infer: forward in eval mode
    without grad). ``memory``: also the peak tensor memory of one more step; ``profile`` > 0:
    the top ``profile`` ops of one more step; ``step_profile``: write every op of one more step
    to this file (:mod:`cadet_d2.bench.step_profile`). Returns a JSON-ready dict."""
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
    precision = resolve_precision(cfg, advise=False)
    accum = int(cfg.SOLVER.ACCUM_STEPS) if mode == "train" else 1
    opt = benchmark_optimizer(model)
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
        if step_profile:
            write_step_profile(step_profile, {precision.name: (step, model)}, device)
            result_extra["step_profile"] = step_profile
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


def benchmark_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The benchmarks' optimizer: SGD with momentum, lr 1e-4."""
    return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)


def write_step_profile(path: str, steps: dict, device: torch.device) -> None:
    """Profile one more step of each ``name: (step, model)`` and write the reports to ``path``."""
    from ..utils.io import atomic_write_bytes
    from .step_profile import whole_step_profile

    with EventStorage(0):
        text = "\n".join(whole_step_profile(step, model, device, title=name) for name, (step, model) in steps.items())
    atomic_write_bytes(path, text.encode("utf-8"))


def _guarded(name: str, step, diverged: dict):
    """``step`` that records a FloatingPointError (a diverged training) in ``diverged[name]``
    and does nothing from then on, so that the other settings of a paired run go on."""
    def run() -> None:
        if name in diverged:
            return
        try:
            step()
        except FloatingPointError as e:
            diverged[name] = str(e)
    return run


def paired_benchmark(cfgs: dict, rounds: int = 5, warmup: int = 1, batch: int = 2, height: int = 301,
                     width: int = 391, step_profile: str = "") -> dict:
    """Training steps of several configs in one process, alternating A, B, C, A, B, C, ...

    On a shared machine the load drifts over minutes; alternating puts every setting under the
    same drift. Returns per setting the median step, images/s, and the median over rounds of its
    step time divided by the first setting's in the same round (``ratio_to_first``). A setting
    whose training diverges (FloatingPointError: non-finite losses or boxes) is dropped from
    the rounds and reported by name (``diverged``: the message; its ``median_step_s`` None);
    the others go on. ``step_profile``: write every op of one more step of each setting there.
    """
    from ..engine.precision import resolve_precision
    from ..engine.step import AccumAMPTrainer

    steps = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        model = build_model(cfg)
        data = random_batch(batch, len(cfg.MODEL.PIXEL_MEAN), height, width)
        opt = benchmark_optimizer(model)
        steps[name] = (AccumAMPTrainer(model, itertools.repeat(data), opt, accum_steps=int(cfg.SOLVER.ACCUM_STEPS),
                                       precision=resolve_precision(cfg, advise=False)),
                       batch * int(cfg.SOLVER.ACCUM_STEPS))
    diverged: dict[str, str] = {}
    with EventStorage(0):
        times, _ = alternating_timings({n: _guarded(n, trainer.run_step, diverged) for n, (trainer, _) in steps.items()},
                                       rounds, warmup)
    first = next(iter(cfgs))
    out = {"rounds": rounds, "batch": batch, "height": height, "width": width, "threads": torch.get_num_threads(),
           "machine": machine_label(), "load_avg_after": os.getloadavg()[0], "settings": {}, "diverged": diverged}
    for name, ts in times.items():
        if name in diverged:
            out["settings"][name] = {"median_step_s": None, "images_per_s": None, "ratio_to_first": None,
                                     "diverged": diverged[name]}
            continue
        med = upper_median(ts)
        ratio = None if first in diverged else upper_median([a / b for a, b in zip(ts, times[first])])
        out["settings"][name] = {"median_step_s": med, "images_per_s": steps[name][1] / med, "step_times_s": ts,
                                 "ratio_to_first": ratio}
    if step_profile:
        write_step_profile(step_profile, {n: (t.run_step, t.model) for n, (t, _) in steps.items() if n not in diverged},
                           torch.device(next(iter(cfgs.values())).MODEL.DEVICE))
    return out
