"""``--to-npy``: one (H, W, 4) uint8 array per pair (R, G, B, thermal), written by the writer.

The images are decoded as training reads paired files (:mod:`cadet_d2.data.images`): RGB as
(H, W, 3); thermal as one channel, a 3-channel file only when grey (every channel equal, one
kept; else an error naming the file), 16-bit values scaled to 8 bits between the image's
percentiles of ``read_grey``'s default (that of ``CADET.INPUT.THERMAL_PERCENTILES``). A thermal image of
another size than the RGB image is resized to it (bilinear) and counted.
"""
from __future__ import annotations

import numpy as np

from ..data.images import read_grey, read_rgb


def read_thermal(path: str) -> np.ndarray:
    """(H, W) uint8 thermal image of ``path``."""
    return read_grey(path)


def write_npy_pair(path: str, pair, report) -> None:
    import cv2

    rgb = read_rgb(pair.rgb)
    thermal = read_thermal(pair.thermal)
    h, w = rgb.shape[:2]
    if thermal.shape != (h, w):
        report.note("thermal resized to the RGB size", pair.thermal)
        thermal = cv2.resize(thermal, (w, h), interpolation=cv2.INTER_LINEAR)
    np.save(path, np.concatenate([rgb, thermal[:, :, None]], axis=2), allow_pickle=False)
