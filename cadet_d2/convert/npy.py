"""``--to-npy``: one (H, W, 4) uint8 array per pair (R, G, B, thermal), written by the writer.

Thermal images: 1-channel, or 3-channel grey (channels within GREY_TOLERANCE; the first kept; a 3-channel image that is not
grey is an error naming the file); 16-bit thermal is scaled to 8 bits linearly between its own
0.5th and 99.5th percentiles. A thermal image of another size than the RGB image is resized to
it (bilinear) and counted.
"""
from __future__ import annotations

import numpy as np

from ..data.errors import DataError

# A 3-channel thermal JPEG counts as grey when its channels differ by at most this (JPEG noise).
GREY_TOLERANCE = 8


def read_rgb(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(path, "unreadable image")
    return img[:, :, ::-1]


def read_thermal(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(path, "unreadable image")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        spread = int((img.max(axis=2).astype(np.int16) - img.min(axis=2).astype(np.int16)).max())
        if spread > GREY_TOLERANCE:
            raise DataError(path, f"3-channel thermal image that is not grey (channels differ by up to {spread})")
        img = img[:, :, 0]
    if img.dtype == np.uint16:
        lo, hi = np.percentile(img, (0.5, 99.5))
        img = np.clip((img.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(path, f"thermal image of type {img.dtype}; expected 8- or 16-bit")
    return img


def write_npy_pair(path: str, pair, report) -> None:
    import cv2

    rgb = read_rgb(pair.rgb)
    thermal = read_thermal(pair.thermal)
    h, w = rgb.shape[:2]
    if thermal.shape != (h, w):
        report.note("thermal resized to the RGB size", pair.thermal)
        thermal = cv2.resize(thermal, (w, h), interpolation=cv2.INTER_LINEAR)
    np.save(path, np.concatenate([rgb, thermal[:, :, None]], axis=2), allow_pickle=False)
