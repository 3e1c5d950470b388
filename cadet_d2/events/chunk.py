"""The one in-memory form of events: :class:`EventChunk`, four aligned 1-D arrays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Structured dtype of event arrays on disk (.npy of tools/make_synthetic.py, and NPY/NPZ input).
EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])


@dataclass
class EventChunk:
    """N events in time order: ``t`` (N,) int64 µs, ``x``/``y`` (N,) uint16 sensor pixels,
    ``p`` (N,) uint8 polarity (1 ON, brighter; 0 OFF). ``offset``: index of the first event in
    the recording (for error messages)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    offset: int = 0

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def take(self, index) -> "EventChunk":
        """The events at ``index`` (a slice or a boolean/integer array); ``offset`` kept for a slice
        starting at 0 only (other selections lose the link to the file)."""
        off = self.offset + (index.start or 0) if isinstance(index, slice) else self.offset
        return EventChunk(self.t[index], self.x[index], self.y[index], self.p[index], off)

    def to_structured(self) -> np.ndarray:
        """(N,) array of :data:`EVENT_DTYPE`."""
        out = np.empty(len(self), dtype=EVENT_DTYPE)
        out["t"], out["x"], out["y"], out["p"] = self.t, self.x, self.y, self.p
        return out


def empty_chunk(offset: int = 0) -> EventChunk:
    return EventChunk(np.empty(0, np.int64), np.empty(0, np.uint16), np.empty(0, np.uint16),
                      np.empty(0, np.uint8), offset)


def make_chunk(t, x, y, p, offset: int = 0) -> EventChunk:
    """An EventChunk with the canonical dtypes (copies only where a dtype differs)."""
    return EventChunk(np.asarray(t, dtype=np.int64), np.asarray(x, dtype=np.uint16),
                      np.asarray(y, dtype=np.uint16), np.asarray(p, dtype=np.uint8), offset)


def concat(a: EventChunk, b: EventChunk) -> EventChunk:
    """``a`` followed by ``b`` (``a``'s offset)."""
    if not len(a):
        return b
    if not len(b):
        return a
    return EventChunk(np.concatenate([a.t, b.t]), np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]),
                      np.concatenate([a.p, b.p]), a.offset)


def last_fill(mask: np.ndarray) -> np.ndarray:
    """(N,) int64: for each position i, the largest j <= i with ``mask[j]``, or -1 when none.

    The vectorised form of "the value last set before here" in a sequential stream: index the
    values with the result (and use the carried state where it is -1)."""
    idx = np.where(mask, np.arange(mask.shape[0], dtype=np.int32 if mask.shape[0] < 2**31 else np.int64), -1)
    return np.maximum.accumulate(idx) if idx.size else idx
