"""The benchmark matrix of ``make gpu-check`` and its Markdown table.

:func:`matrix` lists the runs (dual MiT-b1 + CSSA and + FRM+FFM at 320 x 416, batch 16, each
precision, train and inference; ``CADET.BACKBONE.COMPILE`` on; dual MiT-b5 FRM+FFM at 800 x
1040 with the planner's prediction next to the measured peak); :func:`run_matrix` runs them
one after another within a time budget, recording why a run did not happen; :func:`table`
writes the results as Markdown, with the device named. ``tiny`` swaps every config for a
MiT-b0 at 64 x 96, so the whole path runs on a CPU in seconds (the test suite does).
"""
from __future__ import annotations

import gc
import time
import traceback
from dataclasses import dataclass, field

import torch

B1 = "configs/baselines/frm_ffm_mit_b1.yaml"
B5 = "configs/baselines/frm_ffm_mit_b5.yaml"
CSSA = ["CADET.FUSION.NAME", "cssa", "CADET.FUSION.DEFAULT", "cssa"]
PRECISION_OPTS = {"fp32": ["SOLVER.AMP.ENABLED", "False"],
                  "bf16": ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "bfloat16"],
                  "fp16": ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "float16"]}
TINY_OPTS = ["CADET.BACKBONE.SIZE", "b0", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
             "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"]


@dataclass
class Run:
    """One benchmark run: a config with overrides, a mode ("train", "infer" or "plan": the
    planner's prediction and a measured training step at ``batch``), batch and size."""

    name: str
    config: str
    opts: list
    mode: str
    batch: int
    size: tuple
    precision: str
    iters: int = 10
    warmup: int = 3
    result: dict = field(default_factory=dict)


def matrix(precisions=("bf16", "fp16"), tiny: bool = False, compile_check: bool = True,
           big: bool = True) -> list[Run]:
    """The runs of ``make gpu-check``; ``tiny``: the same runs on a MiT-b0 at 64 x 96."""
    size, batch, iters, warmup = ((64, 96), 2, 1, 0) if tiny else ((320, 416), 16, 10, 3)
    extra = list(TINY_OPTS) if tiny else []
    runs = []
    for fusion, fopts in (("cssa", CSSA), ("frm_ffm", [])):
        for prec in precisions:
            for mode in ("train", "infer"):
                runs.append(Run(f"MiT-b1 {fusion}", B1, fopts + PRECISION_OPTS[prec] + extra, mode, batch, size, prec,
                                iters, warmup))
    if compile_check:
        prec = precisions[0]
        runs.append(Run("MiT-b1 cssa, CADET.BACKBONE.COMPILE", B1,
                        CSSA + PRECISION_OPTS[prec] + ["CADET.BACKBONE.COMPILE", "True"] + extra, "train", batch, size,
                        prec, iters, warmup))
    if big:
        prec = precisions[0]
        runs.append(Run("MiT-b5 frm_ffm, planner", B5, PRECISION_OPTS[prec] + extra, "plan", 1 if tiny else 2,
                        (96, 128) if tiny else (800, 1040), prec, 1 if tiny else 3, 1))
    return runs


def _plan_run(cfg, run: Run, fit_size: tuple) -> dict:
    """The planner's prediction at ``run.batch`` (fit at ``fit_size``, batch 1 at the run's size)
    and a measured training step: tracked tensor peak, and the allocator's peak on CUDA."""
    from .speed import benchmark
    from .planner import fit_memory_model, measure_step_memory

    small = [measure_step_memory(cfg, b, *fit_size, compute=True) for b in (1, 2)]
    target = measure_step_memory(cfg, 1, *run.size, compute=True)
    predicted = fit_memory_model(run.precision, small, target).predict(run.batch)
    measured = benchmark(cfg, "train", run.iters, run.warmup, run.batch, *run.size, memory=True)
    measured["predicted_peak_mb"] = predicted / 2**20
    return measured


def run_matrix(runs: list[Run], budget_s: float = 420.0, log=print) -> list[Run]:
    """Run ``runs`` in order; a run starting after ``budget_s`` seconds, one whose precision
    this device cannot run, or one that fails is recorded with the reason in ``result``."""
    from ..engine import load_config
    from .speed import benchmark

    start = time.perf_counter()
    for run in runs:
        elapsed = time.perf_counter() - start
        if elapsed > budget_s:
            run.result = {"skipped": f"time budget ({budget_s:.0f} s) spent"}
            continue
        try:
            cfg = load_config(run.config, run.opts + (["MODEL.DEVICE", "cuda"] if torch.cuda.is_available()
                                                       else ["MODEL.DEVICE", "cpu"]))
        except ValueError as e:  # e.g. fp16 on a CPU
            run.result = {"skipped": str(e).split(";")[0]}
            continue
        t0 = time.perf_counter()
        try:
            if run.mode == "plan":
                fit = (64, 96) if run.size[0] < 320 else (320, 416)
                run.result = _plan_run(cfg, run, fit)
            else:
                run.result = benchmark(cfg, run.mode, run.iters, run.warmup, run.batch, *run.size)
        except Exception as e:  # noqa: BLE001  one failing run must not lose the others' figures
            run.result = {"failed": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
        run.result["wall_s"] = time.perf_counter() - t0
        log(f"[gpu-check] {run.name} {run.precision} {run.mode}: "
            + (f"{run.result['images_per_s']:.1f} img/s" if "images_per_s" in run.result
               else run.result.get("failed", run.result.get("skipped", ""))))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return runs


def device_name() -> str:
    """The GPU's name, else the CPU's."""
    from ..utils.machine import cpu_label

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return f"CPU: {cpu_label()}"


def table(runs: list[Run], device: str, tests: str = "", when: str = "") -> str:
    """The Markdown section of the results: one row per run."""
    lines = [f"## GPU check: {device}", "",
             f"`make gpu-check` (`tools/gpu_check.py`){', ' + when if when else ''}; torch {torch.__version__}. "
             "Random 5-channel images with 3 boxes each; train: forward + backward + SGD step, "
             "inference: eval mode, no grad; img/s from the median step; peak: "
             "`torch.cuda.max_memory_allocated` of the run (on a CPU: the process's peak RSS).", ""]
    if tests:
        lines += [f"CUDA tests (`pytest -m cuda`): {tests}", ""]
    lines += ["| run | precision | mode | batch | size | img/s | median step (s) | peak (MiB) | planner (MiB) | note |",
              "|---|---|---|---:|---|---:|---:|---:|---:|---|"]
    for r in runs:
        res = r.result
        ips = f"{res['images_per_s']:.1f}" if "images_per_s" in res else "–"
        step = f"{res['median_step_s']:.3f}" if "median_step_s" in res else "–"
        peak = f"{res['peak_memory_mb']:.0f}" if "peak_memory_mb" in res else "–"
        plan = f"{res['predicted_peak_mb']:.0f}" if "predicted_peak_mb" in res else ""
        if "peak_tensor_mb" in res:
            plan += f" (tensor peak {res['peak_tensor_mb']:.0f})"
        note = res.get("skipped") or res.get("failed", "")
        if res.get("first_step_s") and r.mode == "train":
            note = note or f"first step {res['first_step_s']:.1f} s"
        note = note.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.name} | {r.precision} | {r.mode} | {r.batch} | {r.size[0]} × {r.size[1]} | {ips} | "
                     f"{step} | {peak} | {plan} | {note} |")
    return "\n".join(lines) + "\n"
