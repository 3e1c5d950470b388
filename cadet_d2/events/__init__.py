"""Event-camera recordings: readers of the formats cameras write, windows aligned with RGB frames,
and the event representations (docs/events.md).

Every reader gives one in-memory form, an iterator of :class:`EventChunk` (``t`` int64 µs, ``x``/``y``
uint16, ``p`` uint8 0/1), so that a recording of hours never has to fit in memory. Imports one-way:
this package uses ``cadet_d2.data`` (errors, images, the synthetic scenes) and ``cadet_d2.layout``;
nothing of ``cadet_d2.data`` imports it.
"""
from .chunk import EventChunk
from .formats import FORMATS, detect_format, open_recording

__all__ = ["EventChunk", "FORMATS", "detect_format", "open_recording"]
