"""Prophesee EVT 2.0: 32-bit words, the type in bits 31-28 (Prophesee's public format documentation).

=========== ==== ==============================================================================
type        code payload
=========== ==== ==============================================================================
CD_OFF      0x0  time bits 5-0 (bits 27-22), x (bits 21-11), y (bits 10-0): an OFF event
CD_ON       0x1  the same, an ON event
TIME_HIGH   0x8  time bits 33-6 (bits 27-0); it wraps every 2^34 µs (4.8 h)
EXT_TRIGGER 0xA  (ignored)
OTHERS      0xE  (ignored)
CONTINUED   0xF  (ignored)
=========== ==== ==============================================================================
"""
from __future__ import annotations

import numpy as np

from .chunk import EventChunk, make_chunk

CD_OFF, CD_ON, TIME_HIGH = 0x0, 0x1, 0x8
_TH_RANGE = 1 << 28


class Evt2Decoder:
    """State-carrying EVT 2.0 decoder: ``decoder(words) -> EventChunk`` for consecutive chunks
    of (N,) uint32 words. Time bits 33-6 are a counter that moves by each TIME_HIGH's step from
    the one before, modulo 2^28 into [-2^27, 2^27): a wrap-around is +1, a step back stays one
    (reported by the checks of :mod:`.recording`)."""

    def __init__(self):
        self.high = 0        # time >> 6 in force
        self.last_high = -1  # payload of the last TIME_HIGH (-1: none yet)

    def __call__(self, words: np.ndarray, byte_offset: int = 0) -> EventChunk:
        kind = (words >> 28).astype(np.uint8)
        th_pos = np.flatnonzero(kind == TIME_HIGH)
        cd = np.flatnonzero(kind <= CD_ON)
        counter = np.empty(0, np.int64)
        if th_pos.size:
            th_vals = (words[th_pos] & (_TH_RANGE - 1)).astype(np.int64)
            delta = (th_vals - np.concatenate([[self.last_high], th_vals[:-1]]) + _TH_RANGE // 2) % _TH_RANGE \
                - _TH_RANGE // 2
            if self.last_high < 0:  # the file's first TIME_HIGH sets the counter
                delta[0] = th_vals[0]
            counter = self.high + np.cumsum(delta)
            self.last_high = int(th_vals[-1])
        rank = np.searchsorted(th_pos, cd, "right") - 1  # the TIME_HIGH in force at each event
        high = np.where(rank >= 0, counter[np.maximum(rank, 0)] if counter.size else 0, self.high)
        if counter.size:
            self.high = int(counter[-1])
        e = words[cd]
        return make_chunk((high << 6) + ((e >> 22) & 0x3F), (e >> 11) & 0x7FF, e & 0x7FF, kind[cd])


def encode_evt2(t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(M,) uint32 EVT 2.0 words of events in time order (a TIME_HIGH where time bits 33-6 change)."""
    t = np.asarray(t, np.int64)
    x, y, p = (np.asarray(a, np.int64) for a in (x, y, p))
    n = t.shape[0]
    high = t >> 6
    new_high = np.ones(n, bool)
    new_high[1:] = high[1:] != high[:-1]
    words = np.stack([(TIME_HIGH << 28) | (high & (_TH_RANGE - 1)),
                      (p << 28) | ((t & 0x3F) << 22) | (x << 11) | y], axis=1)
    keep = np.stack([new_high, np.ones(n, bool)], axis=1)
    return words[keep].astype(np.uint32)
