"""Prophesee DAT: the text header (``% Version 2``, ``% Width``, ``% Height``, ...), two bytes
(event type, event size), then 8-byte records ``uint32 t`` (µs), ``uint32`` with x (bits 13-0),
y (bits 27-14) and polarity (bits 31-28)."""
from __future__ import annotations

import numpy as np

from ..data.errors import DataError
from .chunk import make_chunk
from .header import header_value, read_header, sensor_size
from .raw import CHUNK_WORDS, read_words

RECORD = np.dtype([("t", "<u4"), ("data", "<u4")])
CD_TYPES = (0x00, 0x0C)  # "Event2D" (ATIS/CD) record types of DAT files


def dat_header(path: str) -> tuple[tuple[int, int] | None, int]:
    """(sensor (width, height) or None, byte offset of the first record)."""
    lines, start = read_header(path)
    if not lines:
        raise DataError(path, "no '%' header: not a Prophesee DAT file")
    with open(path, "rb") as f:
        f.seek(start)
        type_size = f.read(2)
    if len(type_size) < 2:
        raise DataError(path, f"truncated file: no event type and size bytes at byte offset {start}")
    etype, esize = type_size[0], type_size[1]
    if esize != RECORD.itemsize or etype not in CD_TYPES:
        raise DataError(path, f"header at byte offset {start} declares event type 0x{etype:02x} of {esize} "
                              f"bytes; the reader knows CD events (types {[hex(c) for c in CD_TYPES]}) of 8 bytes")
    version = header_value(lines, "version")
    if version is not None and version.split(".")[0] not in ("1", "2"):
        raise DataError(path, f"DAT version {version}; the reader knows versions 1 and 2")
    return sensor_size(lines), start + 2


def read_dat(path: str, start: int, chunk_events: int = CHUNK_WORDS):
    count = 0
    for _, rec in read_words(path, start, RECORD, chunk_events):
        d = rec["data"]
        chunk = make_chunk(rec["t"], d & 0x3FFF, (d >> 14) & 0x3FFF, (d >> 28) & 0xF, count)
        count += len(chunk)
        yield chunk
