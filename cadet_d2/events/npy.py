"""Events as NumPy structured arrays: ``.npy`` (memory-mapped, read in chunks) or ``.npz`` (the
array named ``events``, or its only array; loaded whole). Fields ``t`` (µs), ``x``, ``y`` and
``p`` (also accepted: ``ts``/``timestamp`` for t, ``polarity``/``on`` for p)."""
from __future__ import annotations

import numpy as np

from ..data.errors import DataError
from .chunk import make_chunk

FIELD_NAMES = {"t": ("t", "ts", "timestamp"), "x": ("x",), "y": ("y",), "p": ("p", "polarity", "on", "pol")}
CHUNK_EVENTS = 1 << 23


def load_events_array(path: str) -> np.ndarray:
    """The structured event array of an .npy (memory-mapped) or .npz file."""
    try:
        if path.lower().endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if not names:
                    raise DataError(path, "empty .npz: no event array")
                array = z["events"] if "events" in names else z[names[0]] if len(names) == 1 else None
                if array is None:
                    raise DataError(path, f".npz holds {names}; name the event array 'events'")
        else:
            array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise DataError(path, f"unreadable event array: {e}") from None
    return array


def field_map(path: str, array: np.ndarray) -> dict[str, str]:
    """{t, x, y, p: the array's field name}; a DataError naming the missing one."""
    names = array.dtype.names or ()
    out = {}
    for key, options in FIELD_NAMES.items():
        found = [n for n in options if n in names]
        if not found:
            raise DataError(path, f"event array has fields {list(names)}; it needs {key} (one of {list(options)})")
        out[key] = found[0]
    return out


def read_npy(path: str, chunk_events: int = CHUNK_EVENTS):
    array = load_events_array(path)
    f = field_map(path, array)
    for start in range(0, array.shape[0], chunk_events):
        part = array[start:start + chunk_events]
        yield make_chunk(*(np.ascontiguousarray(part[f[k]]) for k in "txyp"), start)
