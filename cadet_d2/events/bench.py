"""Events/s of the readers and the representations (docs/benchmarks.md, "Event cameras").

    python -m cadet_d2.events.bench [--events 4000000] [--repeats 3] [--samples ../shared/data/event-samples]

Writes a synthetic 1280 x 720 recording of ``--events`` events over one second in each format the
project can write (EVT 3.0, EVT 2.0, DAT, HDF5 with blosc, NPY) to a temporary folder, times
reading each whole (best of ``--repeats``), then each representation on 50 ms windows of it;
with ``--samples``, also the shared real recordings (AEDAT 4.0 is only read, never written).
Single process; numpy's kernels are single-threaded (the blosc filter is set to one thread).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from .chunk import concat, empty_chunk
from .formats import open_recording
from .homography import EventMapper
from .represent import REPRESENTATIONS, RepresentationParams, represent, to_uint8

SENSOR = (1280, 720)


def _write_all(folder: str, t, x, y, p) -> dict[str, str]:
    from .synthetic import write_raw
    from .dat import RECORD

    paths = {}
    for fmt in ("evt3", "evt2"):
        paths[fmt] = os.path.join(folder, f"rec_{fmt}.raw")
        write_raw(paths[fmt], fmt, t, x, y, p, SENSOR)
    rec = np.empty(t.shape[0], RECORD)
    rec["t"], rec["data"] = t, x | (y << 14) | (p.astype(np.int64) << 28)
    paths["dat"] = os.path.join(folder, "rec.dat")
    with open(paths["dat"], "wb") as f:
        f.write(f"% Version 2\n% Width {SENSOR[0]}\n% Height {SENSOR[1]}\n".encode() + bytes([0x0C, 8]))
        f.write(rec.tobytes())
    try:
        import h5py
        import hdf5plugin

        paths["hdf5"] = os.path.join(folder, "rec.h5")
        with h5py.File(paths["hdf5"], "w") as f:
            g = f.create_group("events")
            for k, v, dt in (("t", t, "u4"), ("x", x, "u2"), ("y", y, "u2"), ("p", p, "u1")):
                g.create_dataset(k, data=v.astype(dt), chunks=(1 << 16,), **hdf5plugin.Blosc(cname="lz4"))
            f.create_dataset("t_offset", data=np.int64(0))
            f.attrs["width"], f.attrs["height"] = SENSOR
    except ImportError:
        pass
    from .chunk import EVENT_DTYPE

    arr = np.empty(t.shape[0], EVENT_DTYPE)
    arr["t"], arr["x"], arr["y"], arr["p"] = t, x, y, p
    paths["npy"] = os.path.join(folder, "rec.npy")
    np.save(paths["npy"], arr)
    return paths


def time_read(path: str, repeats: int, sensor=None) -> tuple[int, float]:
    """(events, best seconds) of reading ``path`` whole."""
    best, n = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(len(c) for c in open_recording(path, sensor=sensor).chunks())
        best = min(best, time.perf_counter() - start)
    return n, best


def time_represent(path: str, repeats: int, window_us: int = 50_000) -> dict[str, float]:
    """{representation: events/s} of mapping, binning and the uint8 form on ``window_us`` windows."""
    events = empty_chunk()
    for c in open_recording(path).chunks():
        events = concat(events, c)
    mapper, params = EventMapper(SENSOR, SENSOR), RepresentationParams()
    edges = np.searchsorted(events.t, np.arange(events.t[0], events.t[-1] + window_us, window_us))
    out = {}
    for name in REPRESENTATIONS:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for a, b in zip(edges[:-1], edges[1:]):
                w = events.take(slice(int(a), int(b)))
                index, _ = mapper(w.x, w.y)
                to_uint8(name, represent(name, index, w.t, w.p, SENSOR[1], SENSOR[0], 0, window_us, params), params)
            best = min(best, time.perf_counter() - start)
        out[name] = len(events) / best
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", default="", help="folder of the shared event samples (also timed)")
    args = ap.parse_args(argv)
    os.environ.setdefault("BLOSC_NTHREADS", "1")
    rng = np.random.default_rng(0)
    n = args.events
    t = np.sort(rng.integers(0, 1_000_000, n))
    x, y, p = rng.integers(0, SENSOR[0], n), rng.integers(0, SENSOR[1], n), rng.integers(0, 2, n)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = _write_all(folder, t, x, y, p)
        for fmt, path in paths.items():
            count, sec = time_read(path, args.repeats, SENSOR)
            results[f"read {fmt}"] = count / sec
            print(f"read {fmt:8s} {count} events in {sec:.3f} s: {count / sec / 1e6:.1f} M events/s")
        for name, rate in time_represent(paths["evt3"], args.repeats).items():
            results[f"represent {name}"] = rate
            print(f"represent {name:16s} 50 ms windows ({n // 20} events each): {rate / 1e6:.1f} M events/s")
    if args.samples:
        for name in ("prophesee_evt3_imx636.raw", "inivation_dvxplorer.aedat4", "prophesee_ncars.dat"):
            path = os.path.join(args.samples, name)
            if os.path.isfile(path):
                count, sec = time_read(path, args.repeats)
                results[f"read {name}"] = count / sec
                print(f"read {name}: {count} events in {sec * 1000:.1f} ms: {count / sec / 1e6:.1f} M events/s")
    return results


if __name__ == "__main__":
    main()
