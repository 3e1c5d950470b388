"""Mapping events from the event sensor onto the RGB frame.

* same size, no matrix: identity (x, y);
* other size, no matrix: a plain resize, u = (x + 0.5) W / w - 0.5 (and v likewise), the pixel
  centres' scale from the sensor (w x h) to the frame (W x H);
* a 3x3 homography H (a text file of 9 numbers, row by row): (u', v', s) = H (x, y, 1), u = u'/s.

The event lands on pixel (round(u), round(v)); one outside the frame is counted, not drawn.
"""
from __future__ import annotations

import numpy as np

from ..data.errors import DataError


def load_homography(path: str) -> np.ndarray:
    """(3, 3) float64 matrix of a text file of 9 numbers (sensor pixels -> frame pixels)."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).ravel()
    except (OSError, ValueError) as e:
        raise DataError(path, f"unreadable homography: {e}") from None
    if values.size != 9 or not np.isfinite(values).all():
        raise DataError(path, f"a homography is 9 finite numbers (3 rows of 3); the file has {values.size}")
    return values.reshape(3, 3)


class EventMapper:
    """Sensor pixels (w x h) -> frame pixels (W x H) (module docstring)."""

    def __init__(self, sensor: tuple[int, int], frame: tuple[int, int], matrix: np.ndarray | None = None):
        self.sensor, self.frame = tuple(sensor), tuple(frame)
        self.matrix = None if matrix is None else np.asarray(matrix, np.float64)
        if self.matrix is not None:
            self.kind = "homography"
        else:
            self.kind = "identity" if self.sensor == self.frame else "resize"

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index (M,) int64 = v * W + u of the events inside the frame, inside (N,) bool)."""
        W, H = self.frame
        if self.kind == "identity":
            u, v = x.astype(np.int64), y.astype(np.int64)
        elif self.kind == "resize":
            u = np.floor((x + 0.5) * (W / self.sensor[0])).astype(np.int64)
            v = np.floor((y + 0.5) * (H / self.sensor[1])).astype(np.int64)
        else:
            m = self.matrix
            xf, yf = x.astype(np.float64), y.astype(np.float64)
            s = m[2, 0] * xf + m[2, 1] * yf + m[2, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                uf = (m[0, 0] * xf + m[0, 1] * yf + m[0, 2]) / s
                vf = (m[1, 0] * xf + m[1, 1] * yf + m[1, 2]) / s
            ok = np.isfinite(uf) & np.isfinite(vf) & (s > 0)
            u = np.where(ok, np.floor(np.where(ok, uf, -1) + 0.5), -1).astype(np.int64)
            v = np.where(ok, np.floor(np.where(ok, vf, -1) + 0.5), -1).astype(np.int64)
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        if inside.all():
            return v * W + u, inside
        return v[inside] * W + u[inside], inside
