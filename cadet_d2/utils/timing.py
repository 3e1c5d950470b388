"""Timing helpers shared by the benchmarks: device sync, one profiled step, alternating rounds."""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Kineto, torch.profiler's backend, logs at levels 0 (verbose) to 5 ("USDT": a profiler_start and a
# profiler_stop line per profile, and "gpuGetDeviceCount failed" on a machine without a GPU, both on
# stderr); level 6 prints none of them. It reads KINETO_LOG_LEVEL when it starts, at the first profile.
QUIET_KINETO_LOG_LEVEL = "6"


def quiet_profiler() -> None:
    """Silence kineto's log lines for this process (a KINETO_LOG_LEVEL the user set stays)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", QUIET_KINETO_LOG_LEVEL)


def profiled(step, device: torch.device, record_shapes: bool = False):
    """Run ``step()`` once under torch.profiler (quiet); the profiler object."""
    from torch.profiler import ProfilerActivity, profile

    quiet_profiler()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, record_shapes=record_shapes) as prof:
        step()
        sync(device)
    return prof


def profile_step(step, device: torch.device, top: int | None = 15) -> list[dict]:
    """Run ``step()`` once under torch.profiler; the ``top`` ops by self CPU time (None: all)."""
    prof = profiled(step, device)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "percent": 100 * e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]


def upper_median(values: list[float]) -> float:
    """The middle value, the upper one of the two middle values for an even count."""
    return sorted(values)[len(values) // 2]


def alternating_timings(fns: dict[str, Callable[[], Any]], rounds: int,
                        warmup: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Call every function of ``fns`` in turn, round after round (A, B, C, A, B, C, ...), so that a
    load drifting over minutes slows them all alike. Returns each one's ``rounds`` timed durations
    (s; the first ``warmup`` rounds are not timed) and its last result."""
    times: dict[str, list[float]] = {n: [] for n in fns}
    last: dict[str, Any] = {}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            last[name] = fn()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return times, last
