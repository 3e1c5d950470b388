"""Reading the event modality's file of a pair: a grey image (one channel, :func:`.images.read_grey`)
or an ``.npy`` event frame of ``CADET.INPUT.EVENT_CHANNELS`` channels, (H, W, E) uint8 (or (H, W)
for E = 1), as tools/convert_events.py writes them for multi-channel representations."""
from __future__ import annotations

import numpy as np

from .errors import DataError
from ..layout import DEFAULT_GREY_TOLERANCE
from .images import decode_grey, image_header
from .npy import open_array

# Files an event folder of CADET.DATA.FOLDERS may hold besides images.
EVENT_FRAME_EXTENSIONS = (".npy",)


def is_event_frame(path: str) -> bool:
    return path.lower().endswith(EVENT_FRAME_EXTENSIONS)


def _check(path: str, array: np.ndarray, channels: int) -> None:
    if array.dtype != np.uint8:
        raise DataError(path, f"event frame dtype is {array.dtype}, expected uint8")
    shape_ok = (array.ndim == 3 and array.shape[2] == channels) or (array.ndim == 2 and channels == 1)
    if not shape_ok:
        raise DataError(path, f"event frame shape is {tuple(array.shape)}, expected (H, W, {channels}) "
                              f"(CADET.INPUT.EVENT_CHANNELS = {channels})")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(path, f"zero-size event frame {tuple(array.shape)}")


def event_file_header(path: str) -> tuple[int, int, int]:
    """(height, width, EXIF orientation) of an event file from its header (:func:`.images.image_header`
    for an image; orientation 1 for an ``.npy`` event frame)."""
    if not is_event_frame(path):
        return image_header(path)
    array = open_array(path, mmap=True)
    if array.ndim not in (2, 3):
        raise DataError(path, f"event frame shape is {tuple(array.shape)}, expected (H, W, E)")
    return int(array.shape[0]), int(array.shape[1]), 1


def event_file_size(path: str) -> tuple[int, int]:
    """(height, width) of an event file, oriented (:func:`event_file_header`)."""
    return event_file_header(path)[:2]


def file_channels(path: str) -> int:
    """Channels of an event file: E of an (H, W, E) ``.npy`` event frame, 1 for an image."""
    if not is_event_frame(path):
        return 1
    array = open_array(path, mmap=True)
    return int(array.shape[2]) if array.ndim == 3 else 1


def decode_event_file(path: str, channels: int, factor: int = 1, percentiles=(1.0, 99.0), value_range=(),
                      tolerance: int = DEFAULT_GREY_TOLERANCE, verdict_only: bool = False):
    """(image, verdict) of the event input of one pair: an (H, W, channels) uint8 image (``factor``:
    reduced JPEG decoding) and the grey verdict of an event image (:func:`.images.decode_grey`; None
    for an ``.npy`` event frame). ``verdict_only``: the image may be left undecoded (None)."""
    if is_event_frame(path):
        array = open_array(path)
        _check(path, array, channels)
        return (array if array.ndim == 3 else array[:, :, None]), None
    if channels != 1:
        raise DataError(path, f"an event image has 1 channel but CADET.INPUT.EVENT_CHANNELS is {channels}; "
                              "multi-channel event frames are .npy (H, W, E) files (tools/convert_events.py)")
    image, verdict = decode_grey(path, factor, percentiles, value_range, tolerance, "", verdict_only=verdict_only)
    return (None if image is None else image[:, :, None]), verdict


def read_event_file(path: str, channels: int, factor: int = 1, percentiles=(1.0, 99.0), value_range=(),
                    tolerance: int = DEFAULT_GREY_TOLERANCE) -> np.ndarray:
    """(H, W, channels) uint8 event input of one pair (:func:`decode_event_file`)."""
    return decode_event_file(path, channels, factor, percentiles, value_range, tolerance)[0]
