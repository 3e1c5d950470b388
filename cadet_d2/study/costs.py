"""What an arm costs: parameters (total, fusion-only), GFLOPs, training time, speed, memory.

Parameters and GFLOPs come from :func:`cadet_d2.utils.params.detector_stats`, computed once per
arm and cached in ``<study output>/<arm>/params.json``. Time and memory come from each run's
``status.json`` (written by ``ablate run``) and Detectron2's ``log.txt``.
"""
from __future__ import annotations

import os
from ..utils.io import atomic_write_json
from .plan import Arm, Plan
from .rundir import peak_gpu_mb, read_json, read_status, training_speed


def arm_config(plan: Plan, arm: Arm):
    """The config of ``arm`` (any seed), on the CPU."""
    from ..engine.setup import load_config

    return load_config(plan.config_file(arm), [*plan.arm_opts(arm), *plan.cli_opts, "MODEL.DEVICE", "cpu"])


def arm_params(plan: Plan, arm: Arm, flops: bool = False) -> dict:
    """{params, fusion_params, backbone_params[, gflops, flops_size]}, cached per arm."""
    path = os.path.join(plan.study.output, arm.name, "params.json")
    cached = read_json(path)
    if isinstance(cached, dict) and "params" in cached and (not flops or "gflops" in cached):
        return cached
    from ..utils.params import detector_stats

    h, w = plan.study.report["flops_size"]
    stats = detector_stats(arm_config(plan, arm), height=int(h), width=int(w), flops=flops)
    if flops:
        stats["flops_size"] = [int(h), int(w)]
    atomic_write_json(path, stats)
    return stats


def run_costs(run_dir: str, ims_per_batch: int, max_iter: int) -> dict:
    """{wall_s, img_per_s, speed_source, peak_rss_mb, peak_gpu_mb, attempts, machine} of one run.

    ``img_per_s`` = images per batch x iterations / seconds, from Detectron2's "Overall training
    speed" log lines (training iterations only, after its 3-iteration timer warm-up) when
    present, else from the status file's wall time (which includes start-up and evaluation).
    ``machine``: the attempts' machines (:func:`~cadet_d2.utils.machine.machine_label`), joined
    by " + " when a resumed run moved; "" for attempts recorded before machines were.
    """
    status = read_status(run_dir)
    wall = status.get("wall_s")
    speed = training_speed(run_dir)
    if speed:
        img_s, source = ims_per_batch * speed[0] / speed[1] if speed[1] > 0 else None, "log"
    elif wall:
        img_s, source = ims_per_batch * max_iter / wall, "wall"
    else:
        img_s, source = None, ""
    gpu = peak_gpu_mb(run_dir)
    return {"wall_s": wall, "img_per_s": img_s, "speed_source": source, "peak_rss_mb": status.get("peak_rss_mb"),
            "peak_gpu_mb": gpu, "attempts": len(status.get("attempts", [])), "machine": run_machine(status)}


def run_machine(status: dict) -> str:
    """The distinct machines of a status file's attempts, in order, joined by " + "."""
    names = [a["machine"] for a in status.get("attempts", []) if a.get("machine")]
    return " + ".join(dict.fromkeys(names))
