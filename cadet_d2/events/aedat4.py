"""iniVation AEDAT 4.0 (``#!AER-DAT4.0`` then LZ4/ZSTD-compressed FlatBuffers packets) through the
``aedat`` package (an optional extra: ``pip install .[events]``); only the event stream is read."""
from __future__ import annotations

import numpy as np

from ..data.errors import DataError
from .chunk import make_chunk

MAGIC = b"#!AER-DAT4.0"
CHUNK_EVENTS = 1 << 22


def _decoder(path: str):
    try:
        import aedat
    except ImportError:
        raise ImportError("reading AEDAT 4.0 files needs the aedat package: pip install aedat "
                          "(or pip install .[events])") from None
    try:
        return aedat.Decoder(path)
    except Exception as e:  # the Rust decoder raises its own error types
        raise DataError(path, f"unreadable AEDAT 4.0 file: {e}") from None


def aedat_sensor(path: str) -> tuple[int, int] | None:
    """(width, height) of the first event stream of the file's header."""
    for stream in _decoder(path).id_to_stream().values():
        if stream.get("type") == "events":
            return int(stream["width"]), int(stream["height"])
    raise DataError(path, "AEDAT 4.0 file without an event stream")


def read_aedat4(path: str, chunk_events: int = CHUNK_EVENTS):
    """Chunks of about ``chunk_events`` events (packets are joined)."""
    parts, pending, count = [], 0, 0
    decoder = _decoder(path)
    try:
        for packet in decoder:
            ev = packet.get("events")
            if ev is None:
                continue
            parts.append(ev)
            pending += ev.shape[0]
            if pending >= chunk_events:
                yield _join(parts, count)
                count += pending
                parts, pending = [], 0
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"AEDAT 4.0 packet after event {count + pending}: {e} "
                              "(truncated or corrupt file)") from None
    if parts:
        yield _join(parts, count)


def _join(parts: list, offset: int):
    ev = np.concatenate(parts)
    return make_chunk(ev["t"].astype(np.int64), ev["x"], ev["y"], ev["on"].astype(np.uint8), offset)
