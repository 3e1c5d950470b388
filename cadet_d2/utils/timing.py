"""Timing helpers shared by the benchmarks: device sync, one profiled step, alternating rounds."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_step(step, device: torch.device, top: int | None = 15) -> list[dict]:
    """Run ``step()`` once under torch.profiler; the ``top`` ops by self CPU time (None: all)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
        sync(device)
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
