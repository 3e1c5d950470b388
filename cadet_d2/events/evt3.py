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
        n = words.shape[0]
        kind = (words >> 12).astype(np.uint8)
        payload = (words & 0xFFF).astype(np.int32)
        is_x, is_v12, is_v8 = kind == ADDR_X, kind == VECT_12, kind == VECT_8
        is_vec = is_v12 | is_v8
        ev = np.flatnonzero(is_x | is_vec)  # the words that carry events

        # time: the counter of 4096-µs periods moves by each TIME_HIGH's step from the TIME_HIGH
        # before (signed, modulo 4096) and by 1 at each TIME_LOW below the TIME_LOW before
        is_th, is_tl = kind == TIME_HIGH, kind == TIME_LOW
        th_pos, tl_pos = np.flatnonzero(is_th), np.flatnonzero(is_tl)
        th_vals, tl_vals = payload[th_pos], payload[tl_pos]
        step = np.zeros(n, np.int32)
        if th_vals.size:
            delta = (th_vals - np.concatenate([[self.last_high], th_vals[:-1]]) + 2048) % 4096 - 2048
            if self.last_high < 0:  # the file's first TIME_HIGH sets the counter
                delta[0] = th_vals[0]
            step[th_pos] = delta
        if tl_vals.size:
            step[tl_pos] = tl_vals < np.concatenate([[self.time_low], tl_vals[:-1]])
        high = np.cumsum(step, dtype=np.int64)
        high += self.high
        low_fill = last_fill(is_tl)
        is_y = kind == ADDR_Y
        y_fill = last_fill(is_y)
        time_ev = (high[ev] << 12) + _fill(payload, low_fill[ev], self.time_low)
        row_ev = _fill(payload & 0x7FF, y_fill[ev], self.y)
        p_ev = payload[ev] >> 11
        x_ev = payload[ev] & 0x7FF

        if is_vec.any():
            t, x, y, p = self._vectors(kind, payload, is_vec, is_v12, ev, time_ev, row_ev, x_ev, p_ev)
        else:
            t, x, y, p = time_ev, x_ev, row_ev, p_ev
            self._carry_base(kind, payload)

        if th_vals.size:
            self.last_high = int(th_vals[-1])
        if tl_vals.size:
            self.time_low = int(tl_vals[-1])
        if y_fill.size and y_fill[-1] >= 0:
            self.y = int(payload[y_fill[-1]] & 0x7FF)
        if n:
            self.high = int(high[-1])
        return make_chunk(t, x, y, p)

    def _carry_base(self, kind, payload) -> None:
        """A chunk without vectors: the base in force afterwards is its last VECT_BASE_X's, if any."""
        base_pos = np.flatnonzero(kind == VECT_BASE_X)
        if base_pos.size:
            self.base, self.base_pol = int(payload[base_pos[-1]] & 0x7FF), int(payload[base_pos[-1]] >> 11)

    def _vectors(self, kind, payload, is_vec, is_v12, ev, time_ev, row_ev, x_ev, p_ev):
        """Events of a chunk with vector words: one per ADDR_X, popcount(mask) per vector, in word
        order then bit order. The vector base in force at a vector is the last VECT_BASE_X's x
        plus the advances (12 or 8) of the vectors between them."""
        base_fill = last_fill(kind == VECT_BASE_X)
        vec_of_ev = is_vec[ev]
        vec_idx = ev[vec_of_ev]
        adv = np.where(is_v12[vec_idx], 12, 8)
        cum = np.concatenate([[0], np.cumsum(adv)])  # cum[j]: advances of the vectors before vector j
        at = base_fill[vec_idx]
        safe = np.maximum(at, 0)
        since = cum[:-1] - cum[np.searchsorted(vec_idx, safe)]  # advances since that VECT_BASE_X
        base = np.where(at >= 0, (payload[safe] & 0x7FF) + since, self.base + cum[:-1])
        vpol = np.where(at >= 0, payload[safe] >> 11, self.base_pol)
        last = int(base_fill[-1])
        if last >= 0:
            self.base = int(payload[last] & 0x7FF) + int(cum[-1] - cum[np.searchsorted(vec_idx, last)])
            self.base_pol = int(payload[last] >> 11)
        else:
            self.base += int(cum[-1])

        masks = payload[vec_idx] & np.where(is_v12[vec_idx], 0xFFF, 0xFF)
        r, k = np.nonzero((masks[:, None] >> _BITS12) & 1)  # (vector, bit) of each event, in order
        per_vec = np.bincount(r, minlength=vec_idx.shape[0])
        per_ev = np.ones(ev.shape[0], np.int64)
        per_ev[vec_of_ev] = per_vec
        start = np.cumsum(per_ev) - per_ev
        total = int(start[-1] + per_ev[-1]) if ev.size else 0
        t, x, y, p = (np.empty(total, dt) for dt in (np.int64, np.uint16, np.uint16, np.uint8))
        single = ~vec_of_ev
        dst = start[single]
        t[dst], x[dst], y[dst], p[dst] = time_ev[single], x_ev[single], row_ev[single], p_ev[single]
        rows = np.flatnonzero(vec_of_ev)[r]  # position in ev of each vector event
        rank = np.arange(r.shape[0]) - (np.cumsum(per_vec) - per_vec)[r]  # its rank within its vector
        dst = start[rows] + rank
        t[dst], x[dst], y[dst], p[dst] = time_ev[rows], base[r] + k, row_ev[rows], vpol[r]
        return t, x, y, p


def _fill(values: np.ndarray, at: np.ndarray, state: int) -> np.ndarray:
    """values[at], ``state`` where ``at`` is -1 (nothing set yet in this chunk)."""
    return np.where(at >= 0, values[np.maximum(at, 0)], state)


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
