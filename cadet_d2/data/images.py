"""Decoding one image file per modality (JPEG, PNG, TIFF, BMP) with OpenCV, with clear errors.

* RGB: any colour or grey file, returned (H, W, 3) uint8 in RGB order (the order of ``.npy``
  channels 0-2).
* Thermal and event: one channel (H, W) uint8. A 3-channel file must be grey (all channels
  equal; one is kept), else :class:`DataError`. 8-bit values are kept as they are; 16-bit values
  are scaled to 0-255 linearly between ``lo`` and ``hi``: the fixed ``value_range`` when given,
  else the ``percentiles`` (e.g. 1 and 99) of that image (computed on every 4th pixel of every
  4th row), clipped.
  A 3-channel JPEG found grey is remembered (per process): its later reads decode the luma
  only (``IMREAD_GRAYSCALE``, the same values, ~2.5x faster than a colour decode plus check).
* Reduced decoding: ``factor`` 2, 4 or 8 decodes a JPEG at 1/factor of its size in each axis
  (libjpeg's scaled IDCT: ``ceil(size / factor)`` pixels), which costs a fraction of a full
  decode. Other formats are decoded at full size (``factor`` ignored).
"""
from __future__ import annotations

import math
import os

import cv2
import numpy as np

from .errors import DataError

REDUCTION_FACTORS = (8, 4, 2)
_REDUCED_COLOR = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_REDUCED_GREY = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_GREY_JPEGS: set[str] = set()  # JPEG files of this process found grey (all channels equal)


def is_jpeg(path: str) -> bool:
    return path.lower().endswith((".jpg", ".jpeg"))


# A JPEG ends with its end-of-image marker, a PNG with its IEND chunk; both are looked for in the
# file's last TAIL_BYTES (a few cameras append data after them).
TAIL_BYTES = 4096
_END_MARKERS = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".png": b"IEND"}


def check_complete(path: str) -> None:
    """Raise DataError when a JPEG or PNG file lacks its end marker in its last ``TAIL_BYTES``: a
    truncated file (an interrupted download or extraction). OpenCV decodes a truncated JPEG
    without an error, the missing rows grey, and fails on a truncated PNG only when it is read."""
    marker = _END_MARKERS.get(os.path.splitext(path)[1].lower())
    if marker is None:
        return
    try:
        with open(path, "rb") as f:
            f.seek(max(os.path.getsize(path) - TAIL_BYTES, 0))
            tail = f.read()
    except OSError as e:
        raise DataError(path, f"unreadable image: {e}") from None
    if marker not in tail:
        kind = "JPEG end-of-image marker FFD9" if marker != b"IEND" else "PNG IEND chunk"
        raise DataError(path, f"truncated image: no {kind} at the end of the file; download or extract it again")


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image file from its header (the pixels are not decoded); a
    truncated JPEG or PNG (:func:`check_complete`) is a DataError."""
    from PIL import Image

    if not os.path.isfile(path):
        raise DataError(path, "image file not found")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"unreadable image: {e}") from None
    if width == 0 or height == 0:
        raise DataError(path, f"zero-size image ({height}x{width})")
    check_complete(path)
    return int(height), int(width)


def reduced_shape(height: int, width: int, factor: int) -> tuple[int, int]:
    """Size of an image decoded at 1/factor (factor 1: the size itself)."""
    return math.ceil(height / factor), math.ceil(width / factor)


def reduction_factor(height: int, width: int, min_size: int, max_size: int) -> int:
    """Largest factor in 8, 4, 2 whose reduced image is still at least as large as the resize of
    Detectron2's ``ResizeShortestEdge(min_size, max_size)`` (shorter side to ``min_size``, longer
    side at most ``max_size``); 1 when none is (or ``min_size`` 0: no resize)."""
    if min_size <= 0:
        return 1
    scale = min_size / min(height, width)
    if max_size > 0 and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    for k in REDUCTION_FACTORS:
        if scale * k <= 1.0:
            return k
    return 1


def _read(path: str, flags: int) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(path, "image file not found")
    image = cv2.imread(path, flags)
    if image is None:
        raise DataError(path, "unreadable image (OpenCV could not decode it)")
    if image.size == 0:
        raise DataError(path, f"zero-size image {tuple(image.shape)}")
    return image


def read_rgb(path: str, factor: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 RGB image (at 1/factor of its size for a JPEG and factor 2, 4 or 8)."""
    flags = _REDUCED_COLOR[factor] if factor > 1 and is_jpeg(path) else cv2.IMREAD_COLOR
    return cv2.cvtColor(_read(path, flags), cv2.COLOR_BGR2RGB)


def to_uint8(path: str, image: np.ndarray, percentiles=(1.0, 99.0), value_range=()) -> np.ndarray:
    """8-bit as it is; 16-bit scaled linearly to 0-255 (see the module docstring)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise DataError(path, f"pixel type {image.dtype} is not supported; use 8-bit or 16-bit images")
    if value_range:
        lo, hi = float(value_range[0]), float(value_range[1])
    else:
        lo, hi = (float(v) for v in np.percentile(image[::4, ::4], [percentiles[0], percentiles[1]]))
    scale = 255.0 / max(hi - lo, 1.0)
    out = (image.astype(np.float32) - lo) * scale
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def read_grey(path: str, factor: int = 1, percentiles=(1.0, 99.0), value_range=()) -> np.ndarray:
    """(H, W) uint8 single-channel image of a thermal or event file (see the module docstring)."""
    jpeg = is_jpeg(path)
    if jpeg and path in _GREY_JPEGS:
        return _read(path, _REDUCED_GREY[factor])
    if factor > 1 and jpeg:
        image = _read(path, _REDUCED_COLOR[factor])  # colour, so that a non-grey file is still caught
    else:
        image = _read(path, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        elif image.shape[2] in (3, 4):
            b, g, r = cv2.split(image)[:3]
            if cv2.countNonZero(cv2.absdiff(b, g)) or cv2.countNonZero(cv2.absdiff(g, r)):
                raise DataError(path, "3-channel image whose channels differ; a thermal/event image must be "
                                      "grey (1 channel, or 3 equal channels)")
            image = b
            if jpeg:
                _GREY_JPEGS.add(path)
        else:
            raise DataError(path, f"{image.shape[2]}-channel image; a thermal/event image must be grey")
    return to_uint8(path, np.ascontiguousarray(image), percentiles, value_range)
