"""Prophesee EVT 3.0: 16-bit words, the type in bits 15-12 (Prophesee's public format documentation).

=========== ==== ==============================================================================
type        code payload (bits 11-0)
=========== ==== ==============================================================================
ADDR_Y      0x0  y (bits 10-0); sets the row of the events that follow
ADDR_X      0x2  x (bits 10-0), polarity (bit 11): one event at (x, y, t)
VECT_BASE_X 0x3  x (bits 10-0), polarity (bit 11): the base of the vectors that follow
VECT_12     0x4  12-bit mask: an event at base + k for each set bit k; base += 12
VECT_8      0x5  8-bit mask (bits 7-0): the same for 8 pixels; base += 8
TIME_LOW    0x6  bits 11-0 of the time (µs)
CONTINUED_4 0x7  (payload of the word before; ignored)
TIME_HIGH   0x8  bits 23-12 of the time; it wraps every 2^24 µs (16.8 s)
EXT_TRIGGER 0xA  (trigger input; ignored)
OTHERS      0xE  (ignored)
CONTINUED12 0xF  (ignored)
=========== ==== ==============================================================================

Time: a counter of 4096-µs periods (time = counter * 4096 + TIME_LOW) moves by each TIME_HIGH's
step from the TIME_HIGH before, taken modulo 4096 into [-2048, 2048) (so 4095 -> 0 is the 24-bit
wrap-around, +1), and by +1 at each TIME_LOW lower than the TIME_LOW before (the 12-bit counter
wrapping between two TIME_HIGH words). This is the rule of the reference decoder that wrote
``prophesee_evt3_imx636.decoded.npy``, which this decoder equals event by event (docs/events.md
notes what it does on that file). A TIME_HIGH step back stays a step back, and the checks of
:mod:`.recording` report it as timestamps going backwards.

The decoder is vectorised per chunk: the row, the TIME_LOW and the vector base in force at each
word are "last value set" fills (:func:`.chunk.last_fill`), the counter a cumulative sum, all
seeded by the state carried from the chunk before.
"""
from __future__ import annotations

import numpy as np

from .chunk import EventChunk, last_fill, make_chunk

ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8, TIME_LOW, TIME_HIGH = 0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x8
MAX_STEP = 2047  # the largest TIME_HIGH step forward the encoder writes (8.4 s without events)
_BITS12 = np.arange(12, dtype=np.uint16)


class Evt3Decoder:
    """State-carrying EVT 3.0 decoder: ``decoder(words) -> EventChunk`` for consecutive chunks
    of (N,) uint16 words."""

    def __init__(self):
        self.y = 0
        self.high = 0        # the counter of 4096-µs periods (time >> 12)
        self.last_high = -1  # payload of the last TIME_HIGH (-1: none yet)
        self.time_low = 0
        self.base = 0        # vector base x in force (advanced by each vector)
        self.base_pol = 0

    def __call__(self, words: np.ndarray, byte_offset: int = 0) -> EventChunk:
        w = words.astype(np.int64)
        kind = w >> 12
        payload = w & 0xFFF
        n = w.shape[0]

        # time: the counter of 4096-µs periods moves by each TIME_HIGH's step from the TIME_HIGH
        # before (signed, modulo 4096) and by 1 at each TIME_LOW below the TIME_LOW before
        is_th, is_tl = kind == TIME_HIGH, kind == TIME_LOW
        th_vals, tl_vals = payload[is_th], payload[is_tl]
        step = np.zeros(n, np.int64)
        if th_vals.size:
            prev = np.concatenate([[self.last_high], th_vals[:-1]])
            delta = (th_vals - prev + 2048) % 4096 - 2048
            if self.last_high < 0:  # the file's first TIME_HIGH sets the counter
                delta[0] = th_vals[0]
            step[is_th] = delta
        if tl_vals.size:
            prev = np.concatenate([[self.time_low], tl_vals[:-1]])
            step[is_tl] = tl_vals < prev
        high = self.high + np.cumsum(step)
        tl_at = last_fill(is_tl)
        low = np.where(tl_at >= 0, payload[np.maximum(tl_at, 0)], self.time_low)
        time = (high << 12) + low

        is_y = kind == ADDR_Y
        y_at = last_fill(is_y)
        row = np.where(y_at >= 0, payload[np.maximum(y_at, 0)] & 0x7FF, self.y)

        # vectors: base x in force at each word = last VECT_BASE_X + the advances since it
        is_base = kind == VECT_BASE_X
        is_v12, is_v8 = kind == VECT_12, kind == VECT_8
        advance = np.where(is_v12, 12, np.where(is_v8, 8, 0))
        cum = np.cumsum(advance) - advance  # advances before each word
        base_at = last_fill(is_base)
        safe = np.maximum(base_at, 0)
        base = np.where(base_at >= 0, (payload[safe] & 0x7FF) + cum - cum[safe], self.base + cum)
        vpol = np.where(base_at >= 0, payload[safe] >> 11, self.base_pol)

        # events: one per ADDR_X, popcount(mask) per vector, in word order then bit order
        is_x = kind == ADDR_X
        is_vec = is_v12 | is_v8
        vec_idx = np.flatnonzero(is_vec)
        masks = payload[vec_idx] & np.where(is_v12[vec_idx], 0xFFF, 0xFF)
        bits = ((masks[:, None] >> _BITS12) & 1).astype(bool)
        per_word = np.zeros(n, dtype=np.int64)
        per_word[is_x] = 1
        per_word[vec_idx] = bits.sum(axis=1)
        start = np.cumsum(per_word) - per_word
        total = int(per_word.sum())
        t = np.empty(total, np.int64)
        x = np.empty(total, np.int64)
        y = np.empty(total, np.int64)
        p = np.empty(total, np.int64)
        xi = np.flatnonzero(is_x)
        dst = start[xi]
        t[dst], x[dst], y[dst], p[dst] = time[xi], payload[xi] & 0x7FF, row[xi], payload[xi] >> 11
        r, k = np.nonzero(bits)
        src = vec_idx[r]
        dst = start[src] + (np.cumsum(bits, axis=1)[r, k] - 1)
        t[dst], x[dst], y[dst], p[dst] = time[src], base[src] + k, row[src], vpol[src]

        # carry the state
        if th_vals.size:
            self.last_high = int(th_vals[-1])
        if n:
            self.high, self.time_low, self.y = int(high[-1]), int(low[-1]), int(row[-1])
            self.base = int(base[-1] + advance[-1])
            self.base_pol = int(vpol[-1])
        return make_chunk(t, x, y, p)


def encode_evt3(t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(M,) uint16 EVT 3.0 words of events in time order: one ADDR_X per event, ADDR_Y and
    TIME_LOW where they change, and a TIME_HIGH where the time rule of :class:`Evt3Decoder`
    (TIME_LOW falls count +1) does not already give the event's time >> 12. Times are kept
    modulo 2^24 µs at the first event; a gap over ``MAX_STEP`` * 4096 µs is a ValueError."""
    t = np.asarray(t, np.int64)
    x, y, p = (np.asarray(a, np.int64) for a in (x, y, p))
    n = t.shape[0]
    high, low = t >> 12, t & 0xFFF
    need = np.zeros(n, np.int64)
    if n:
        need[1:] = (high[1:] - high[:-1]) - (low[1:] < low[:-1])
        if need.max(initial=0) > MAX_STEP:
            raise ValueError(f"a gap of more than {MAX_STEP * 4096} µs between two events; EVT 3.0 words of "
                             "this encoder cannot say it")
        need[0] = high[0] % 4096
    word = np.cumsum(need) % 4096
    new_high = need != 0
    new_high[:1] = True
    new_low = new_high.copy()
    new_low[1:] |= low[1:] != low[:-1]
    new_y = np.ones(n, bool)
    new_y[1:] = y[1:] != y[:-1]
    words = np.stack([(TIME_HIGH << 12) | word, (TIME_LOW << 12) | low, (ADDR_Y << 12) | y,
                      (ADDR_X << 12) | (p << 11) | x], axis=1)
    keep = np.stack([new_high, new_low, new_y, np.ones(n, bool)], axis=1)
    return words[keep].astype(np.uint16)
