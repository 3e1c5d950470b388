"""The checks every recording's events pass on their way out of a reader, and their counts.

* an event outside the sensor (x >= width or y >= height), or with a polarity other than 0/1;
* an event earlier than one before it (timestamps going backwards, beyond what the format's
  time wrap-around explains: the decoders have already unwrapped it).

``on_error`` "raise": a DataError naming the file and the event's index; "skip": the event is
dropped and counted (:class:`EventStats`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..data.errors import DataError
from .chunk import EventChunk
from .formats import Recording

ON_ERROR = ("raise", "skip")


@dataclass
class EventStats:
    """Counts of the events read: ``total`` and ``by_polarity`` [OFF, ON] of every event the
    file holds (skipped ones included), the time range of the kept ones, and the skipped ones
    (an event with two faults counts under both)."""

    total: int = 0
    by_polarity: list = field(default_factory=lambda: [0, 0])
    t_first: int | None = None
    t_last: int | None = None
    outside_sensor: int = 0
    bad_polarity: int = 0
    backwards: int = 0

    def as_dict(self) -> dict:
        return {"events_total": self.total,
                "events_by_polarity": {"0": self.by_polarity[0], "1": self.by_polarity[1]},
                "time_range_us": [self.t_first, self.t_last],
                "skipped": {"outside_sensor": self.outside_sensor, "bad_polarity": self.bad_polarity,
                            "timestamps_backwards": self.backwards}}


def checked_chunks(rec: Recording, stats: EventStats, on_error: str = "raise") -> Iterator[EventChunk]:
    """``rec``'s chunks after the checks of the module docstring, counted in ``stats``."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error {on_error!r}: choose from {list(ON_ERROR)}")
    last = None  # the latest time so far
    for chunk in rec.chunks():
        n = len(chunk)
        if not n:
            continue
        stats.total += n
        counts = np.bincount(chunk.p, minlength=2)
        stats.by_polarity[0] += int(counts[0])
        stats.by_polarity[1] += int(counts[1])
        faults = [(chunk.p > 1, lambda i: f"polarity {chunk.p[i]} (expected 0 or 1)")]
        if rec.sensor is not None:
            w, h = rec.sensor
            faults.append(((chunk.x >= w) | (chunk.y >= h),
                           lambda i: f"at x={chunk.x[i]}, y={chunk.y[i]}, outside the declared sensor size {w}x{h}"))
        run = np.maximum.accumulate(chunk.t if last is None else np.concatenate([[last], chunk.t]))
        before = run[:-1] if last is not None else np.concatenate([[chunk.t[0]], run[:-1]])
        faults.append((chunk.t < before, lambda i: f"t={chunk.t[i]} µs is before an earlier event's "
                                                   f"t={before[i]} µs (timestamps go backwards)"))
        bad = np.zeros(n, bool)
        for mask, _ in faults:
            bad |= mask
        if bad.any() and on_error == "raise":  # the first faulty event of the chunk
            i = int(np.argmax(bad))
            what = next(describe for mask, describe in faults if mask[i])
            raise DataError(rec.path, f"event {chunk.offset + i}: {what(i)} ({rec.format}; --on-error skip drops "
                                      "such events and counts them)")
        stats.bad_polarity += int(faults[0][0].sum())
        stats.outside_sensor += int(faults[1][0].sum()) if rec.sensor is not None else 0
        stats.backwards += int(faults[-1][0].sum())
        keep = ~bad
        last = int(run[-1])
        kept = chunk if keep.all() else chunk.take(keep)
        if len(kept):
            stats.t_first = int(kept.t[0]) if stats.t_first is None else stats.t_first
            stats.t_last = int(kept.t[-1])
            yield kept


def read_all(rec: Recording, on_error: str = "raise") -> tuple[EventChunk, EventStats]:
    """Every event of ``rec`` in one chunk (for small recordings and tests) and its counts."""
    from .chunk import concat, empty_chunk

    stats, out = EventStats(), empty_chunk()
    for c in checked_chunks(rec, stats, on_error):
        out = concat(out, c)
    return out, stats
