"""Decoding one image file per modality (JPEG, PNG, TIFF, BMP) with OpenCV, with clear errors:
the one place that says what an RGB, thermal or event file may be and how it is read.

* Orientation: an EXIF orientation tag (``0x0112``, read by PIL from the header) is applied, to
  every modality and every read alike: the pixels are decoded as stored
  (``IMREAD_IGNORE_ORIENTATION``) and then flipped/rotated as the tag says, and
  :func:`image_size` gives the size after it. Boxes are in the pixels of the image so shown.
* RGB: any colour or grey file, returned (H, W, 3) uint8 in RGB order (the order of ``.npy``
  channels 0-2).
* Thermal and event: one channel (H, W) uint8. A 3-channel (or 4-channel: the alpha is dropped)
  file whose channels differ by at most ``tolerance`` grey levels (``CADET.INPUT.GREY_TOLERANCE``,
  equal channels included) is read as its luma: for a JPEG the decoder's own luma plane
  (``IMREAD_GRAYSCALE``), for other formats BT.601 ``0.299 R + 0.587 G + 0.114 B`` rounded
  (``cv2.COLOR_BGR2GRAY``; equal channels give that value). Beyond it, a thermal file is mapped
  back through ``palette`` (``CADET.INPUT.THERMAL_PALETTE``, :mod:`cadet_d2.data.palettes`) when
  one is set and fits (mean residual at most ``palettes.MAX_RESIDUAL``); otherwise it is a
  :class:`DataError` that gives the largest channel difference and what the file most likely is
  (a palette rendering, an event rendering, a colour photograph).
  8-bit values are kept as they are; 16-bit values
  are scaled to 0-255 linearly between ``lo`` and ``hi``: the fixed ``value_range`` when given,
  else the ``percentiles`` (e.g. 1 and 99) of that image (computed on every 4th pixel of every
  4th row), clipped.
  A 3-channel JPEG found grey is remembered (per process, with its largest channel difference):
  its later reads decode the luma only (the same values as the first read, ~2.5x faster than a
  colour decode plus check).
* Reduced decoding: ``factor`` 2, 4 or 8 decodes a JPEG at 1/factor of its size in each axis
  (libjpeg's scaled IDCT: ``ceil(size / factor)`` pixels), which costs a fraction of a full
  decode. Other formats are decoded at full size (``factor`` ignored).

:func:`decode_grey` returns the image with its :class:`GreyVerdict` (how it was read), which
``tools/check_data.py`` counts; :func:`read_grey` is the image alone.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..layout import DEFAULT_GREY_TOLERANCE
from . import palettes
from .errors import DataError

REDUCTION_FACTORS = (8, 4, 2)
_REDUCED_COLOR = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}
_REDUCED_GREY = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_GREY_JPEGS: dict[str, int] = {}  # 3-channel JPEG files of this process read as grey: largest channel difference
ORIENTATION_TAG = 0x0112
ORIENTATIONS = {1: "as stored", 2: "mirrored left-right", 3: "rotated 180", 4: "mirrored top-bottom",
                5: "transposed", 6: "rotated 90 clockwise", 7: "transversed", 8: "rotated 90 counter-clockwise"}


@dataclass(frozen=True)
class GreyVerdict:
    """How a thermal/event file was read: ``kind`` "grey" (1 channel, or 3 equal), "near-grey"
    (3 channels within the tolerance, read as luma) or "palette" (mapped back through
    ``palette``); ``channel_difference``: the largest difference between two channels of a pixel;
    ``residual``: the palette's mean residual."""

    kind: str = "grey"
    channel_difference: int = 0
    palette: str = ""
    residual: float = 0.0


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


def image_header(path: str) -> tuple[int, int, int]:
    """(height, width, EXIF orientation) of an image file from its header (the pixels are not
    decoded): the size once the orientation is applied, the orientation 1 when untagged; a
    truncated JPEG or PNG (:func:`check_complete`) is a DataError."""
    from PIL import Image

    if not os.path.isfile(path):
        raise DataError(path, "image file not found")
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = _orientation_tag(im)
    except (OSError, SyntaxError, ValueError, TypeError) as e:
        raise DataError(path, f"unreadable image: {e}") from None
    if width == 0 or height == 0:
        raise DataError(path, f"zero-size image ({height}x{width})")
    check_complete(path)
    if orientation >= 5:  # 5-8 swap the axes
        height, width = width, height
    return int(height), int(width), orientation


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image file as read (its EXIF orientation applied), from its header."""
    return image_header(path)[:2]


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W[, C]) pixels as stored -> as an EXIF ``orientation`` (1-8) says they are shown."""
    if orientation in (5, 6, 7, 8):
        image = cv2.transpose(image)  # then 5 is done; 6, 7, 8 = a flip of the transpose
        flip = {6: 1, 7: -1, 8: 0}.get(orientation)
    else:
        flip = {2: 1, 3: -1, 4: 0}.get(orientation)
    return image if flip is None else cv2.flip(image, flip)


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


def _orientation_tag(im) -> int:
    """The EXIF orientation of an open PIL image; 1 when untagged or outside 1-8 (no meaning)."""
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except (TypeError, ValueError, SyntaxError, OSError):  # a malformed EXIF block: as untagged
        return 1
    return value if value in ORIENTATIONS else 1


def _orientation(path: str) -> int:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return _orientation_tag(im)
    except (OSError, SyntaxError, ValueError):
        return 1  # OpenCV decodes what PIL cannot parse (or says it is unreadable)


def _read(path: str, flags: int) -> np.ndarray:
    """The pixels as OpenCV decodes them with ``flags``, the EXIF orientation applied (:func:`orient`)."""
    if not os.path.isfile(path):
        raise DataError(path, "image file not found")
    image = cv2.imread(path, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DataError(path, "unreadable image (OpenCV could not decode it)")
    if image.size == 0:
        raise DataError(path, f"zero-size image {tuple(image.shape)}")
    return orient(image, _orientation(path))


def read_rgb(path: str, factor: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 RGB image (at 1/factor of its size for a JPEG and factor 2, 4 or 8)."""
    flags = _REDUCED_COLOR[factor] if is_jpeg(path) else cv2.IMREAD_COLOR
    return cv2.cvtColor(_read(path, flags), cv2.COLOR_BGR2RGB)


def check_dtype(path: str, image: np.ndarray) -> None:
    """DataError unless the pixels are 8-bit or 16-bit."""
    if image.dtype not in (np.uint8, np.uint16):
        raise DataError(path, f"pixel type {image.dtype} is not supported; use 8-bit or 16-bit images")


def to_uint8(path: str, image: np.ndarray, percentiles=(1.0, 99.0), value_range=()) -> np.ndarray:
    """8-bit as it is; 16-bit scaled linearly to 0-255 (see the module docstring)."""
    if image.dtype == np.uint8:
        return image
    check_dtype(path, image)
    if value_range:
        lo, hi = float(value_range[0]), float(value_range[1])
    else:
        lo, hi = (float(v) for v in np.percentile(image[::4, ::4], [percentiles[0], percentiles[1]]))
    scale = 255.0 / max(hi - lo, 1.0)
    out = (image.astype(np.float32) - lo) * scale
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def channel_difference(image: np.ndarray) -> int:
    """Largest difference between two of the first 3 channels of one pixel of (H, W, C>=3) pixels."""
    b, g, r = cv2.split(image)[:3]
    return int(max(cv2.absdiff(b, g).max(), cv2.absdiff(g, r).max(), cv2.absdiff(b, r).max()))


def decode_grey(path: str, factor: int = 1, percentiles=(1.0, 99.0), value_range=(),
                tolerance: int = DEFAULT_GREY_TOLERANCE, palette: str = "",
                verdict_only: bool = False) -> tuple[np.ndarray | None, GreyVerdict]:
    """((H, W) uint8 single-channel image of a thermal or event file, how it was read); see the
    module docstring. ``palette`` "" (or for an event file): a colour file is an error.
    ``verdict_only``: the same checks and verdict, but no image (None): a near-grey JPEG's luma
    plane is not decoded (tools/check_data.py)."""
    jpeg = is_jpeg(path)
    known = _GREY_JPEGS.get(path) if jpeg else None
    if known is not None and known <= tolerance:
        return _read(path, _REDUCED_GREY[factor]), GreyVerdict("grey" if known == 0 else "near-grey", known)
    image = _read(path, _REDUCED_COLOR[factor] if jpeg and factor > 1 else cv2.IMREAD_UNCHANGED)
    verdict = GreyVerdict()
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        diff = channel_difference(image)
        if diff <= tolerance:
            verdict = GreyVerdict("grey" if diff == 0 else "near-grey", diff)
            if jpeg:  # the luma plane, as later reads decode it
                _GREY_JPEGS[path] = diff
                if verdict_only:
                    return None, verdict
                image = _read(path, _REDUCED_GREY[factor])
            else:
                image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY)
        elif image.dtype != np.uint8:
            raise DataError(path, f"{image.dtype} 3-channel image whose channels differ by up to {diff} levels; a "
                                  "thermal/event image must be grey (1 channel, or 3 equal channels)")
        elif palette:
            bgr = image[:, :, :3]
            image, residual = palettes.to_scalar(bgr, palette)
            if residual > palettes.MAX_RESIDUAL:
                raise DataError(path, f"CADET.INPUT.THERMAL_PALETTE {palette} does not fit this file (mean residual "
                                      f"{residual:.1f} > {palettes.MAX_RESIDUAL}); " + palettes.describe(bgr))
            verdict = GreyVerdict("palette", diff, palette, residual)
        else:
            raise DataError(path, f"3-channel image whose channels differ by up to {diff} grey levels (more than "
                                  f"CADET.INPUT.GREY_TOLERANCE {tolerance}); a thermal/event image must be grey: "
                                  + palettes.describe(image[:, :, :3]))
    elif image.ndim == 3:
        raise DataError(path, f"{image.shape[2]}-channel image; a thermal/event image must be grey")
    if verdict_only:
        check_dtype(path, image)
        return None, verdict
    return to_uint8(path, np.ascontiguousarray(image), percentiles, value_range), verdict


def read_grey(path: str, factor: int = 1, percentiles=(1.0, 99.0), value_range=(),
              tolerance: int = DEFAULT_GREY_TOLERANCE, palette: str = "") -> np.ndarray:
    """(H, W) uint8 single-channel image of a thermal or event file (:func:`decode_grey`)."""
    return decode_grey(path, factor, percentiles, value_range, tolerance, palette)[0]
