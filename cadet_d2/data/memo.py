"""Keeping what a data set's files read to, for the process, while those files are unchanged.

A fingerprint is a tuple of ``(path, size, mtime_ns)``, one per file a read depends on (a path
that does not exist: size and mtime -1). :class:`FileMemo` re-reads when it changes. Like make's
and git's timestamps it trusts mtimes only when they are older than the file system's time
resolution: a read that depends on a file changed less than :data:`RACY_S` seconds before it is not
kept, so a file rewritten within the same clock tick is never missed.
"""
from __future__ import annotations

import os
import pickle
import time
from typing import Callable

RACY_S = 2.0  # a result is kept only when every file it read is older than this (seconds)


def stat_entry(path: str) -> tuple[str, int, int]:
    """``(path, size, mtime_ns)``; ``(path, -1, -1)`` when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path, -1, -1
    return path, st.st_size, st.st_mtime_ns


def folder_entries(folder: str) -> tuple[tuple[str, int, int], ...]:
    """:func:`stat_entry` of each entry of ``folder`` (not recursive), by name; the folder's own
    entry when it does not exist."""
    try:
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it)
    except (FileNotFoundError, NotADirectoryError):
        return (stat_entry(folder),)
    return tuple(stat_entry(os.path.join(folder, n)) for n in names)


class FileMemo:
    """``memo()`` returns ``read()``'s result (a list of dicts), reading again only when
    ``fingerprint()`` has changed since the kept read, or when that read was racy.

    The result is kept pickled, as Detectron2's ``DatasetFromList`` keeps its dicts: each call
    returns a fresh copy (unpickling is ~8x faster than ``copy.deepcopy``), and one bytes object
    (175 bytes per image, against 1.25 KB as Python objects, for a pair with one box) is all that
    forked loader workers inherit."""

    def __init__(self, read: Callable[[], list], fingerprint: Callable[[], tuple]):
        self.read, self.fingerprint = read, fingerprint
        self.kept: tuple[tuple, bytes] | None = None  # (fingerprint, pickled result) of the last read kept

    def __call__(self) -> list:
        started = time.time_ns()
        key = self.fingerprint()
        if self.kept is not None and self.kept[0] == key:
            return pickle.loads(self.kept[1])
        result = self.read()
        newest = max((mtime for _, _, mtime in key), default=-1)
        racy = newest >= started - int(RACY_S * 1e9)
        self.kept = None if racy else (key, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        return result
