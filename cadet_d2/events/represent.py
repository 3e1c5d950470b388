"""Event representations: the events of one window -> an (H, W, C) frame (docs/events.md).

For a window [t0, t1) and the events (x_i, y_i, t_i, p_i) mapped into the frame, s_i = 2 p_i - 1:

* ``signed_count`` (C = 1): S(x, y) = sum of s_i at (x, y).
* ``polarity_counts`` (C = 2): N_OFF(x, y), N_ON(x, y), the events of each polarity at (x, y).
* ``time_surface`` (C = 1): exp(-(t1 - t_last(x, y)) / tau), t_last the latest event at (x, y);
  0 where there is none. In [0, 1] (exp(-Δt / tau) > 0 for an event at the window's start).
* ``voxel_grid`` (C = B bins): t*_i = (B - 1) (t_i - t0) / (t1 - t0) and
  V_b(x, y) = sum of s_i max(0, 1 - |b - t*_i|) (bilinear in time; Zhu et al., CVPR 2019). Each
  event spreads weight 1 over two neighbouring bins, so the sum over b of V_b is S.

Stored as uint8 (the event modality's images and ``.npy`` frames): ``signed_count`` and
``voxel_grid`` as clip(128 + scale * value, 0, 255), ``polarity_counts`` as clip(scale * n, 0, 255),
``time_surface`` as round(255 * value); ``scale`` (grey levels per event, default 16) and rounding
to the nearest level. Binning is one ``np.bincount`` per frame (the time surface:
``np.maximum.at``); no per-event Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPRESENTATIONS = ("signed_count", "polarity_counts", "time_surface", "voxel_grid")
DEFAULT_SCALE = 16.0
DEFAULT_TAU_US = 25_000
DEFAULT_BINS = 5


@dataclass
class RepresentationParams:
    """``scale``: grey levels per event in the uint8 form; ``tau_us``: time-surface decay (µs);
    ``bins``: voxel-grid bins B."""

    scale: float = DEFAULT_SCALE
    tau_us: float = DEFAULT_TAU_US
    bins: int = DEFAULT_BINS

    def __post_init__(self):
        if not self.scale > 0 or not self.tau_us > 0 or int(self.bins) < 2:
            raise ValueError(f"representation parameters scale {self.scale}, tau {self.tau_us} µs, bins {self.bins}: "
                             "scale and tau must be > 0 and bins >= 2")


def channels(name: str, params: RepresentationParams) -> int:
    """C of representation ``name``."""
    if name not in REPRESENTATIONS:
        raise ValueError(f"event representation {name!r}: choose from {list(REPRESENTATIONS)}")
    return {"signed_count": 1, "polarity_counts": 2, "time_surface": 1, "voxel_grid": int(params.bins)}[name]


def represent(name: str, index: np.ndarray, t: np.ndarray, p: np.ndarray, height: int, width: int,
              t0: int, t1: int, params: RepresentationParams) -> np.ndarray:
    """(height, width, C) float32 frame of representation ``name``; ``index`` (N,) int64 pixel
    indices y * width + x inside the frame, ``t`` (N,) int64 µs, ``p`` (N,) uint8."""
    hw = height * width
    c = channels(name, params)
    if name == "signed_count":
        out = np.bincount(index, weights=2.0 * p - 1.0, minlength=hw)[:, None]
    elif name == "polarity_counts":
        out = np.bincount(index * 2 + p, minlength=2 * hw).reshape(hw, 2)  # [OFF, ON] per pixel
    elif name == "time_surface":
        last = np.full(hw, np.iinfo(np.int64).min, np.int64)
        np.maximum.at(last, index, t)
        seen = last > np.iinfo(np.int64).min
        out = np.zeros(hw, np.float64)
        out[seen] = np.exp(-(t1 - last[seen]) / float(params.tau_us))
        out = out[:, None]
    else:  # voxel_grid
        b = int(params.bins)
        span = max(t1 - t0, 1)
        ts = (b - 1) * (t - t0).astype(np.float64) / span
        ts = np.clip(ts, 0.0, b - 1)
        lo = np.minimum(ts.astype(np.int64), b - 2)
        frac = ts - lo
        s = 2.0 * p - 1.0
        base = index * b + lo
        out = np.bincount(np.concatenate([base, base + 1]), weights=np.concatenate([s * (1.0 - frac), s * frac]),
                          minlength=hw * b).reshape(hw, b)
    return out.reshape(height, width, c).astype(np.float32)


def to_uint8(name: str, frame: np.ndarray, params: RepresentationParams) -> np.ndarray:
    """The stored uint8 form of a frame of ``represent`` (module docstring)."""
    v = frame * np.float32(255.0 if name == "time_surface" else params.scale)
    v += np.float32(0.5 if name in ("time_surface", "polarity_counts") else 128.5)
    np.floor(v, out=v)
    np.clip(v, 0, 255, out=v)
    return v.astype(np.uint8)
