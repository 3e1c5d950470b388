"""The formats registry: which reader opens a recording, detected from its header or extension.

=========== ==================================================== =====================================
format      detected by                                          sensor size from
=========== ==================================================== =====================================
evt2, evt3  ``%`` header with ``% evt 2.0``/``3.0`` or           ``% geometry WxH``, ``% format
            ``% format EVT2/EVT3``; else extension ``.raw``      ...;width=W;height=H``, plugin name
dat         ``%`` header and extension ``.dat``                   ``% Width``/``% Height``
aedat4      ``#!AER-DAT4.0`` (extension ``.aedat4``)              the event stream's header
hdf5        HDF5 signature (``.h5``, ``.hdf5``)                   ``width``/``height`` attributes
npy         NumPy signature / zip (``.npy``, ``.npz``)            none
=========== ==================================================== =====================================

Where the file gives no sensor size, the caller gives it (``sensor=(width, height)``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

from ..data.errors import DataError
from .chunk import EventChunk

FORMATS = ("evt2", "evt3", "dat", "aedat4", "hdf5", "npy")
_EXTENSIONS = {".raw": None, ".dat": "dat", ".aedat4": "aedat4", ".h5": "hdf5", ".hdf5": "hdf5",
               ".npy": "npy", ".npz": "npy"}


@dataclass
class Recording:
    """An opened recording: ``chunks()`` iterates its events (:class:`EventChunk`, time order as
    the file has it) from the start, each call anew; ``sensor`` (width, height) or None."""

    path: str
    format: str
    sensor: tuple[int, int] | None
    reader: Callable[[], Iterator[EventChunk]]

    def chunks(self) -> Iterator[EventChunk]:
        return self.reader()


def detect_format(path: str) -> str:
    """The format of ``path`` from its first bytes (and, for Prophesee headers, the extension)."""
    if not os.path.isfile(path):
        raise DataError(path, "event recording not found")
    with open(path, "rb") as f:
        head = f.read(16)
    ext = os.path.splitext(path)[1].lower()
    if head.startswith(b"#!AER-DAT4"):
        return "aedat4"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"\x93NUMPY") or (head.startswith(b"PK") and ext == ".npz"):
        return "npy"
    if head.startswith(b"%"):
        from .header import declared_evt, read_header

        try:
            declared = declared_evt(read_header(path)[0])
        except ValueError as e:
            raise DataError(path, str(e)) from None
        if declared:
            return declared
        if ext == ".dat":
            return "dat"
    if ext in _EXTENSIONS and _EXTENSIONS[ext]:
        return _EXTENSIONS[ext]
    raise DataError(path, f"unknown event format (first bytes {head[:8]!r}); give it (one of {list(FORMATS)})")


def _sensor(path: str, header: tuple[int, int] | None, given: tuple[int, int] | None) -> tuple[int, int] | None:
    """The header's sensor size, else the one given; both, differing, is a DataError."""
    if header is not None and given is not None and tuple(given) != tuple(header):
        raise DataError(path, f"the file's header says the sensor is {header[0]}x{header[1]}, the sensor size "
                              f"given is {given[0]}x{given[1]}")
    return tuple(header) if header is not None else (tuple(given) if given is not None else None)


def open_recording(path: str, fmt: str | None = None, sensor: tuple[int, int] | None = None,
                   chunk_events: int | None = None) -> Recording:
    """Open ``path`` as ``fmt`` (None: :func:`detect_format`). ``sensor`` (width, height) is used
    where the file gives none (and must agree where it gives one); a file whose header
    contradicts ``fmt`` is a DataError."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"event format {fmt!r}: choose from {list(FORMATS)}")
    if not os.path.isfile(path):
        raise DataError(path, "event recording not found")
    detected = detect_format(path) if fmt is None else fmt
    kw = {} if chunk_events is None else {"chunk_events": chunk_events}
    if detected in ("evt2", "evt3"):
        import numpy as np

        from .evt2 import Evt2Decoder
        from .evt3 import Evt3Decoder
        from .raw import decode_raw, raw_header

        name, size, start = raw_header(path, fmt)
        words = {"chunk_words": kw["chunk_events"]} if kw else {}
        if name == "evt3":
            reader = lambda: decode_raw(path, start, Evt3Decoder(), np.uint16, **words)  # noqa: E731
        else:
            reader = lambda: decode_raw(path, start, Evt2Decoder(), np.uint32, **words)  # noqa: E731
        return Recording(path, name, _sensor(path, size, sensor), reader)
    if fmt is not None and fmt != detect_format(path):
        raise DataError(path, f"opened as {fmt} but the file's header says {detect_format(path)}")
    if detected == "dat":
        from .dat import dat_header, read_dat

        size, start = dat_header(path)
        return Recording(path, "dat", _sensor(path, size, sensor), lambda: read_dat(path, start, **kw))
    if detected == "aedat4":
        from .aedat4 import aedat_sensor, read_aedat4

        return Recording(path, "aedat4", _sensor(path, aedat_sensor(path), sensor), lambda: read_aedat4(path, **kw))
    if detected == "hdf5":
        from .hdf5 import hdf5_sensor, read_hdf5

        return Recording(path, "hdf5", _sensor(path, hdf5_sensor(path), sensor), lambda: read_hdf5(path, **kw))
    from .npy import read_npy

    return Recording(path, "npy", sensor, lambda: read_npy(path, **kw))
