"""DSEC-style HDF5: ``events/{x,y,t,p}`` (t in µs since ``t_offset``), ``ms_to_idx``, ``t_offset``,
usually blosc-compressed; read in slices through ``h5py`` and ``hdf5plugin`` (an optional extra:
``pip install .[events]``). The sensor size is taken from ``width``/``height`` attributes of the
file or of ``events`` when present (DSEC has none: give it, 640 x 480 for DSEC)."""
from __future__ import annotations

from ..data.errors import DataError
from .chunk import make_chunk

CHUNK_EVENTS = 1 << 22


def _h5py():
    try:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the blosc filter with HDF5)
    except ImportError:
        raise ImportError("reading HDF5 event files needs h5py and hdf5plugin: pip install h5py hdf5plugin "
                          "(or pip install .[events])") from None
    return h5py


def _open(path: str):
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(path, f"unreadable HDF5 file: {e}") from None
    if "events" not in f or any(k not in f["events"] for k in "xytp"):
        f.close()
        raise DataError(path, "HDF5 file without events/x, events/y, events/t and events/p (DSEC layout)")
    return f


def hdf5_sensor(path: str) -> tuple[int, int] | None:
    with _open(path) as f:
        for node in (f, f["events"]):
            if "width" in node.attrs and "height" in node.attrs:
                return int(node.attrs["width"]), int(node.attrs["height"])
    return None


def read_hdf5(path: str, chunk_events: int = CHUNK_EVENTS):
    with _open(path) as f:
        ev = f["events"]
        n = ev["t"].shape[0]
        if any(ev[k].shape[0] != n for k in "xyp"):
            raise DataError(path, f"events/x, y, t, p have different lengths "
                                  f"({[ev[k].shape[0] for k in 'xytp']})")
        t_offset = int(f["t_offset"][()]) if "t_offset" in f else 0
        for start in range(0, n, chunk_events):
            s = slice(start, min(start + chunk_events, n))
            try:
                t = ev["t"][s].astype("int64") + t_offset
                yield make_chunk(t, ev["x"][s], ev["y"][s], ev["p"][s], start)
            except OSError as e:
                raise DataError(path, f"events {s.start}-{s.stop}: unreadable ({e})") from None
