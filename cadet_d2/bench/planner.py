"""Memory planner: how many images per GPU fit, and which setting reaches an effective batch.

For each setting (precision x activation checkpointing) the planner measures the exact peak
tensor memory of a training step (:class:`~cadet_d2.utils.memory.TensorMemoryTracker`, with
the arithmetic skipped by :class:`~cadet_d2.utils.memory.SkipArithmetic` unless asked to
compute) at two small batch sizes and fits ``peak(b) = fixed + per_image * b``. With
``fixed_size``, the two batch sizes run at that smaller size and only batch 1 at the wanted
size: the fixed part (weights, gradients, optimizer state, autocast's weight copies) does not
depend on the image size, so ``per_image = peak(1, size) - fixed``.

What it cannot see, and the margin it keeps for it (:data:`MARGIN_FRACTION`,
:data:`RESERVED_GIB`): the CUDA context, the caching allocator's rounding and fragmentation,
cuDNN workspaces, NCCL buffers; with several GPUs DDP's gradient buckets (one more copy of the
gradients) are added to the fixed part. With ``SOLVER.ACCUM_STEPS`` > 1 the gradients of the
earlier micro-batches are alive during the later ones: their size is added to the fixed part
(an upper bound: the peak of a single batch may already hold some of them).
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, field

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from ..utils.memory import SkipArithmetic, TensorMemoryTracker, training_state_tensors
from ..utils.timing import upper_median
from .speed import random_batch

GIB = 2**30
# Share of the GPU's memory kept free for the caching allocator's rounding and fragmentation.
MARGIN_FRACTION = 0.10
# GiB kept free for the CUDA context (~0.5), cuDNN workspaces and NCCL's buffers.
RESERVED_GIB = 1.5

# The settings the planner can measure: config overrides on top of the given config.
CHECKPOINT_ALL = "[1, 2, 3, 4]"
SETTINGS = {
    "fp32": ["SOLVER.AMP.ENABLED", "False", "CADET.BACKBONE.CHECKPOINT_STAGES", "[]"],
    "bf16": ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "bfloat16",
             "CADET.BACKBONE.CHECKPOINT_STAGES", "[]"],
    "fp16": ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "float16",
             "CADET.BACKBONE.CHECKPOINT_STAGES", "[]"],
    "fp32+ckpt": ["SOLVER.AMP.ENABLED", "False", "CADET.BACKBONE.CHECKPOINT_STAGES", CHECKPOINT_ALL],
    "bf16+ckpt": ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "bfloat16",
                  "CADET.BACKBONE.CHECKPOINT_STAGES", CHECKPOINT_ALL],
    "fp16+ckpt": ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "float16",
                  "CADET.BACKBONE.CHECKPOINT_STAGES", CHECKPOINT_ALL],
}
DEFAULT_SETTINGS = ("fp32", "bf16", "fp32+ckpt", "bf16+ckpt")


def setting_cfg(cfg, name: str):
    """A copy of ``cfg`` with the overrides of setting ``name`` (one of :data:`SETTINGS`),
    ``SOLVER.ACCUM_STEPS`` 1 (the planner chooses the accumulation) and the attention kernel
    that the configuration runs on a GPU, which the plan is for, wherever it is measured."""
    from ..config import validate_cadet_config
    from ..modeling.backbone.common import attention_kind

    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; choose from {sorted(SETTINGS)}")
    out = cfg.clone()
    out.defrost()
    out.merge_from_list(SETTINGS[name] + ["SOLVER.ACCUM_STEPS", "1",
                                          "CADET.BACKBONE.ATTENTION", attention_kind(cfg, "cuda")])
    validate_cadet_config(out)
    out.freeze()
    return out


def measure_step_memory(cfg, batch: int, height: int, width: int, compute: bool = False) -> dict:
    """Peak tensor memory (bytes) of one training step of ``batch`` random (C, ``height``,
    ``width``) images: :func:`measure_points` with one point."""
    return measure_points(cfg, [(batch, height, width)], compute)[0]


def measure_points(cfg, points, compute: bool = False) -> list[dict]:
    """Peak tensor memory (bytes) of one training step at each ``(batch, height, width)`` of
    ``points``, with the config's precision, checkpointing and optimizer, on one model built
    once. A warm-up step on one small image first creates the optimizer state (momentum / Adam
    state: the size of the weights, whatever the input). ``compute`` False skips the arithmetic
    of :data:`~cadet_d2.utils.memory.HEAVY_OPS` (same storage sizes, memory-bound time only).
    Each result: peak, state (alive before the step: weights, gradients, optimizer state,
    inputs), gradient bytes and the wall time of the measured step."""
    from ..engine.precision import resolve_precision
    from ..engine.step import AccumAMPTrainer
    from ..engine.trainer import CadetTrainer

    torch.manual_seed(0)
    model = build_model(cfg)
    opt = CadetTrainer.build_optimizer(cfg, model)
    channels = len(cfg.MODEL.PIXEL_MEAN)
    feed: list = [random_batch(1, channels, 64, 64)]
    trainer = AccumAMPTrainer(model, iter(lambda: feed[0], None), opt, accum_steps=1,
                              precision=resolve_precision(cfg, advise=False))
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    skip = None if compute else SkipArithmetic(device=str(model.device))

    def step() -> None:
        if skip is None:
            trainer.run_step()
        else:
            with skip:
                trainer.run_step()

    out = []
    with EventStorage(0):
        step()  # warm-up: optimizer state, lazily built buffers
        for batch, height, width in points:
            feed[0] = random_batch(batch, channels, height, width)
            gc.collect()
            tracker = TensorMemoryTracker(model.device.type)
            tracker.track(training_state_tensors(model, opt) + [d["image"] for d in feed[0]])
            state = tracker.live_bytes
            t0 = time.perf_counter()
            with tracker:
                step()
            out.append({"batch": batch, "height": height, "width": width, "peak_bytes": tracker.peak_bytes,
                        "state_bytes": state, "grad_bytes": grad_bytes, "step_s": time.perf_counter() - t0,
                        "computed": compute})
            del tracker
    del trainer, model, opt, feed, skip
    gc.collect()
    return out


@dataclass
class MemoryModel:
    """``peak(b) = fixed_bytes + per_image_bytes * b`` for one setting, from measured points."""

    setting: str
    fixed_bytes: float
    per_image_bytes: float
    grad_bytes: int
    state_bytes: int
    points: list = field(default_factory=list)

    def predict(self, batch: int, accum_steps: int = 1, gpus: int = 1) -> float:
        """Predicted peak bytes per GPU for micro-batches of ``batch`` images per GPU."""
        extra = self.grad_bytes * ((accum_steps > 1) + (gpus > 1))
        return self.fixed_bytes + extra + self.per_image_bytes * batch

    def max_batch(self, budget_bytes: float, accum_steps: int = 1, gpus: int = 1) -> int:
        """The most images per GPU whose predicted peak fits ``budget_bytes`` (0: none)."""
        room = budget_bytes - self.predict(0, accum_steps, gpus)
        return max(0, math.floor(room / self.per_image_bytes)) if self.per_image_bytes > 0 else 0


def fit_memory_model(setting: str, small: list[dict], target: dict | None = None) -> MemoryModel:
    """Fit :class:`MemoryModel` to two measurements at different batch sizes (``small``); with
    ``target`` (batch 1 at a larger size), the per-image part is ``target's peak - fixed``."""
    if len(small) != 2 or small[0]["batch"] == small[1]["batch"]:
        raise ValueError("the fit needs two measurements at different batch sizes")
    a, b = sorted(small, key=lambda m: m["batch"])
    per_image = (b["peak_bytes"] - a["peak_bytes"]) / (b["batch"] - a["batch"])
    fixed = a["peak_bytes"] - per_image * a["batch"]
    points = [a, b]
    if target is not None:
        per_image = (target["peak_bytes"] - fixed) / target["batch"]
        points.append(target)
    return MemoryModel(setting, fixed, per_image, a["grad_bytes"], a["state_bytes"], points)


def measure_models(cfg, settings, height: int, width: int, batches=(1, 2), fixed_size=None,
                   compute: bool = False, log=None) -> dict[str, MemoryModel]:
    """One :class:`MemoryModel` per setting (measurements run one at a time)."""
    models = {}
    for name in settings:
        scfg = setting_cfg(cfg, name)
        fit_h, fit_w = fixed_size or (height, width)
        points = [(b, fit_h, fit_w) for b in batches] + ([(1, height, width)] if fixed_size else [])
        measured = measure_points(scfg, points, compute)
        small, target = measured[:2], (measured[2] if fixed_size else None)
        models[name] = fit_memory_model(name, small, target)
        if log:
            m = models[name]
            log(f"[plan] {name}: fixed {m.fixed_bytes / GIB:.2f} GiB, {m.per_image_bytes / GIB:.3f} GiB per image")
    return models


def time_settings(cfg, settings, batch: int, height: int, width: int, rounds: int = 3) -> dict[str, float]:
    """Step time of each setting relative to the first, measured (real arithmetic) by alternating
    their steps in one process (:func:`~cadet_d2.bench.speed.paired_benchmark`); ``accum``:
    the time per image of 2 accumulated micro-batches of ``batch`` relative to one of ``batch``."""
    from .speed import paired_benchmark

    cfgs = {name: setting_cfg(cfg, name) for name in settings}
    first = setting_cfg(cfg, settings[0])
    accum = first.clone()
    accum.defrost()
    accum.SOLVER.ACCUM_STEPS = 2
    cfgs["accum"] = accum
    r = paired_benchmark(cfgs, rounds=rounds, warmup=1, batch=batch, height=height, width=width)
    out = {n: s["ratio_to_first"] for n, s in r["settings"].items()}
    out["accum"] = out["accum"] / 2
    out["_step_s"] = {n: upper_median(s["step_times_s"]) for n, s in r["settings"].items()}
    return out


def budget_bytes(gpu_gib: float) -> float:
    """The bytes the planner lets a step's tensors use on a GPU of ``gpu_gib`` GiB."""
    return gpu_gib * GIB * (1 - MARGIN_FRACTION) - RESERVED_GIB * GIB


def plan(models: dict[str, MemoryModel], gpu_gib: float, effective_batch: int = 0, gpus: int = 1,
         costs: dict | None = None) -> dict:
    """The largest ``SOLVER.IMS_PER_BATCH`` per GPU of each setting, and for ``effective_batch``
    every (setting, ``ACCUM_STEPS``) that fits, cheapest first: by measured step-time ratio
    (``costs``, per image) where measured, else by fewest changes (the settings' order, then
    less accumulation)."""
    budget = budget_bytes(gpu_gib)
    out = {"gpu_gib": gpu_gib, "gpus": gpus, "budget_gib": budget / GIB, "margin_fraction": MARGIN_FRACTION,
           "reserved_gib": RESERVED_GIB, "max_ims_per_gpu": {}, "effective_batch": effective_batch, "fits": [],
           "cannot_see": "CUDA allocator rounding and fragmentation, cuDNN workspaces, NCCL buffers, the CUDA "
                         "context (kept free: the margin and reserve above); with several GPUs DDP's gradient "
                         "buckets are added as one copy of the gradients"}
    for name, m in models.items():
        out["max_ims_per_gpu"][name] = m.max_batch(budget, 1, gpus)
    if effective_batch:
        if effective_batch % gpus:
            raise ValueError(f"effective batch {effective_batch} does not divide by {gpus} GPUs")
        per_gpu = effective_batch // gpus
        for order, (name, m) in enumerate(models.items()):
            for accum in (a for a in range(1, per_gpu + 1) if per_gpu % a == 0):
                micro = per_gpu // accum
                peak = m.predict(micro, accum, gpus)
                if peak > budget:
                    continue
                cost = None
                if costs and name in costs:
                    cost = costs[name] * (costs["accum"] if accum > 1 and "accum" in costs else 1.0)
                out["fits"].append({"setting": name, "ims_per_gpu": micro, "accum_steps": accum,
                                    "ims_per_batch": micro * gpus, "predicted_gib": peak / GIB,
                                    "step_time_ratio": cost, "_order": (order, accum)})
                break  # more accumulation than the least that fits only costs time
        out["fits"].sort(key=lambda f: (f["step_time_ratio"] is None, f["step_time_ratio"] or 0, f["_order"]))
        for f in out["fits"]:
            del f["_order"]
    return out


def models_to_json(models: dict[str, MemoryModel]) -> dict:
    return {n: {**asdict(m), "fixed_gib": m.fixed_bytes / GIB, "per_image_gib": m.per_image_bytes / GIB}
            for n, m in models.items()}


def models_from_json(saved: dict, settings, source: str) -> dict[str, MemoryModel]:
    """The :class:`MemoryModel` of each of ``settings`` from :func:`models_to_json`'s output."""
    missing = [s for s in settings if s not in saved]
    if missing:
        raise ValueError(f"{source}: no memory model for setting(s) {missing}; it has {sorted(saved)}")
    fields = ("setting", "fixed_bytes", "per_image_bytes", "grad_bytes", "state_bytes", "points")
    return {s: MemoryModel(**{k: saved[s][k] for k in fields}) for s in settings}


def format_plan(p: dict, models: dict[str, MemoryModel]) -> str:
    """The plan as text, for the terminal."""
    lines = [f"GPU {p['gpu_gib']:g} GiB x {p['gpus']}: planning with {p['budget_gib']:.1f} GiB per GPU "
             f"({100 * p['margin_fraction']:.0f} % margin and {p['reserved_gib']:g} GiB reserved for what it "
             f"cannot see: {p['cannot_see']})"]
    for name, m in models.items():
        lines.append(f"  {name:10s} fixed {m.fixed_bytes / GIB:6.2f} GiB + {m.per_image_bytes / GIB:6.3f} GiB per image"
                     f" -> largest SOLVER.IMS_PER_BATCH per GPU: {p['max_ims_per_gpu'][name]}")
    if p["effective_batch"]:
        if not p["fits"]:
            lines.append(f"effective batch {p['effective_batch']}: no measured setting fits")
        for i, f in enumerate(p["fits"]):
            cost = f"step time x{f['step_time_ratio']:.2f} (measured)" if f["step_time_ratio"] else "step time not measured"
            lines.append(f"{'cheapest' if i == 0 else '        '} effective batch {p['effective_batch']}: {f['setting']}, "
                         f"SOLVER.IMS_PER_BATCH {f['ims_per_batch']} SOLVER.ACCUM_STEPS {f['accum_steps']} "
                         f"-> {f['predicted_gib']:.1f} GiB per GPU; {cost}")
    return "\n".join(lines)
