"""Windows of events aligned with frame times, cut from a stream of chunks.

Frame k at time T_k (µs) gets, by ``window_us`` = Δt, the events with T_k - Δt <= t < T_k, or, by
``count`` = N, the last N events with t < T_k (fewer at the start of the recording). Windows may
overlap (Δt longer than the frame period); the stream is read once, holding only the events
that a window not yet cut can still need.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .chunk import EventChunk, concat, empty_chunk


def cut_windows(chunks: Iterator[EventChunk], frame_times: np.ndarray, window_us: int | None = None,
                count: int | None = None) -> Iterator[tuple[int, EventChunk, int, int]]:
    """(frame index, its events, window start µs, window end µs) for each frame whose time is
    reached by the stream, in frame order; ``frame_times`` (F,) int64, non-decreasing. A frame
    later than the last event gets no window here (the caller reports it). The window start of a
    count window is its first event's time (T_k when it is empty)."""
    if (window_us is None) == (count is None):
        raise ValueError("give exactly one of window_us (fixed duration) and count (fixed number of events)")
    if window_us is not None and window_us <= 0:
        raise ValueError(f"window of {window_us} µs: it must be > 0")
    if count is not None and count <= 0:
        raise ValueError(f"window of {count} events: it must be > 0")
    times = np.asarray(frame_times, np.int64)
    buf, k, n = empty_chunk(), 0, times.shape[0]
    for chunk in chunks:
        if k == n:
            continue  # drain the stream (its counts are the caller's)
        buf = concat(buf, chunk)
        last_t = int(buf.t[-1])
        while k < n and times[k] <= last_t:
            yield _window(buf, k, int(times[k]), window_us, count)
            k += 1
        if k < n:  # keep what frame k and later can still need
            end = int(np.searchsorted(buf.t, times[k], "left"))
            keep = (int(np.searchsorted(buf.t, times[k] - window_us, "left")) if window_us is not None
                    else max(end - count, 0))
            buf = buf.take(slice(keep, None))
        else:
            buf = empty_chunk()


def _window(buf: EventChunk, k: int, t_end: int, window_us, count) -> tuple[int, EventChunk, int, int]:
    end = int(np.searchsorted(buf.t, t_end, "left"))
    if window_us is not None:
        start = int(np.searchsorted(buf.t, t_end - window_us, "left"))
        return k, buf.take(slice(start, end)), t_end - window_us, t_end
    start = max(end - count, 0)
    events = buf.take(slice(start, end))
    return k, events, int(events.t[0]) if len(events) else t_end, t_end
