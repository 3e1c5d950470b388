"""Prophesee RAW files: the text header, then 16-bit (EVT 3.0) or 32-bit (EVT 2.0) little-endian
words, read in chunks and decoded by a state-carrying decoder (:mod:`.evt2`, :mod:`.evt3`)."""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from ..data.errors import DataError
from .chunk import EventChunk
from .header import declared_evt, read_header, sensor_size

# Words read per chunk: 4 Mi words (8 or 16 MiB of file; the decoders hold a few arrays of this length).
CHUNK_WORDS = 1 << 22


def raw_header(path: str, expected: str | None = None) -> tuple[str, tuple[int, int] | None, int]:
    """(format "evt2"/"evt3", sensor (width, height) or None, header bytes) of a RAW file.
    ``expected``: the format the caller declared; a header saying another is a DataError."""
    lines, start = read_header(path)
    try:
        fmt = declared_evt(lines)
    except ValueError as e:
        raise DataError(path, str(e)) from None
    if fmt is None and expected is None:
        raise DataError(path, "RAW header names no event format ('% evt 2.0', '% evt 3.0' or '% format EVT3;...'); "
                              "give the format (--format evt2 or evt3)")
    if fmt is not None and fmt not in ("evt2", "evt3"):
        raise DataError(path, f"RAW header declares {fmt}; the readers know evt2 and evt3")
    if expected is not None and fmt is not None and fmt != expected:
        raise DataError(path, f"the header declares {fmt} but the file was opened as {expected}")
    return fmt or expected, sensor_size(lines), start


def read_words(path: str, start: int, dtype, chunk_words: int = CHUNK_WORDS) -> Iterator[tuple[int, np.ndarray]]:
    """(byte offset, words) chunks of the data after the header; a size that is not a whole number
    of words is a DataError naming the byte offset of the incomplete last word."""
    size = os.path.getsize(path)
    item = np.dtype(dtype).itemsize
    if (size - start) % item:
        last = start + (size - start) // item * item
        raise DataError(path, f"truncated file: {size - last} byte(s) at byte offset {last} are not a whole "
                              f"{item}-byte word")
    with open(path, "rb") as f:
        f.seek(start)
        offset = start
        while True:
            words = np.fromfile(f, dtype=dtype, count=chunk_words)
            if not words.size:
                return
            yield offset, words
            offset += words.size * item


def decode_raw(path: str, start: int, decoder, dtype, chunk_words: int = CHUNK_WORDS) -> Iterator[EventChunk]:
    """The events of a RAW file, chunk by chunk, through ``decoder(words, byte_offset)``."""
    count = 0
    for offset, words in read_words(path, start, dtype, chunk_words):
        chunk = decoder(words, offset)
        chunk.offset = count
        count += len(chunk)
        if len(chunk):
            yield chunk
