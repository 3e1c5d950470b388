"""A recording -> one event frame per RGB frame, and ``events_report.json`` (tools/convert_events.py).

Frame k (stem ``stems[k]``) gets the window of :mod:`.windows` before its time, mapped onto the
frame (:mod:`.homography`) and rasterised (:mod:`.represent`): ``<stem>.png`` (8-bit grey) for a
one-channel representation, ``<stem>.npy`` (H, W, C) uint8 for more channels: the files the event
modality of the paired-file source reads (``CADET.INPUT.EVENT_CHANNELS`` = C).
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..data.errors import DataError, read_lines
from .formats import open_recording
from .homography import EventMapper
from .recording import EventStats, checked_chunks
from .represent import RepresentationParams, channels, represent, to_uint8
from .windows import cut_windows

REPORT_FILE = "events_report.json"


def read_timestamps(path: str) -> np.ndarray:
    """(F,) int64 frame times of a text file, one integer µs per line (blank lines and ``#``
    comments skipped); a bad line or a time earlier than the one before is a DataError naming
    the line."""
    times, lines = [], []
    rows = read_lines(path, "timestamps")
    for lineno, row in enumerate(rows, start=1):
        text = row.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError:
            raise DataError(path, f"{text!r} is not an integer time in µs", lineno) from None
        if times and value < times[-1]:
            raise DataError(path, f"frame time {value} µs is earlier than the frame before ({times[-1]} µs, "
                                  f"line {lines[-1]})", lineno)
        times.append(value)
        lines.append(lineno)
    if not times:
        raise DataError(path, "no frame times (one integer µs per line)")
    return np.asarray(times, np.int64)


def frame_times_at_rate(start_us: int, fps: float, frames: int) -> np.ndarray:
    """(frames,) int64: start + round(k * 1e6 / fps)."""
    if not fps > 0 or frames <= 0:
        raise ValueError(f"frame rate {fps} and frame count {frames} must be > 0")
    return start_us + np.round(np.arange(frames) * (1e6 / fps)).astype(np.int64)


def convert_recording(recording: str, frame_times: np.ndarray, out_dir: str, stems: list[str] | None = None, *,
                      representation: str = "signed_count", window_us: int | None = 50_000,
                      count: int | None = None, fmt: str | None = None, sensor: tuple[int, int] | None = None,
                      frame_size: tuple[int, int] | None = None, homography: np.ndarray | None = None,
                      homography_file: str = "", on_error: str = "raise",
                      params: RepresentationParams | None = None, timestamps_source: str = "") -> dict:
    """Write the event frames of ``recording`` for ``frame_times`` into ``out_dir`` and return
    the report (also ``out_dir/events_report.json``). ``frame_size`` (W, H), default the
    sensor's. ``on_error`` "skip": events outside the sensor or going back in time are dropped
    and counted, and a frame outside the recording gets no file (listed); "raise": each is a
    DataError naming the file and the event or line."""
    params = params or RepresentationParams()
    n_channels = channels(representation, params)
    rec = open_recording(recording, fmt, sensor)
    if rec.sensor is None:
        raise DataError(recording, f"the {rec.format} file gives no sensor size; give it (--sensor-size W H)")
    frame_size = tuple(frame_size or rec.sensor)
    mapper = EventMapper(rec.sensor, frame_size, homography)
    times = np.asarray(frame_times, np.int64)
    stems = list(stems) if stems is not None else [f"frame_{k:06d}" for k in range(len(times))]
    if len(stems) != len(times):
        raise ValueError(f"{len(stems)} frame names for {len(times)} frame times")
    os.makedirs(out_dir, exist_ok=True)
    ext = ".png" if n_channels == 1 else ".npy"
    width, height = frame_size
    stats = EventStats()
    windows, outside = [], []

    def outside_recording(k: int, where: str) -> None:
        source = timestamps_source or "frame times"
        if stats.t_first is None:
            where = "outside the recording (it holds no events)"
        if on_error == "raise":
            raise DataError(source, f"frame {k} ({stems[k]}) at {int(times[k])} µs is {where} of {recording} "
                                    f"({stats.t_first}-{stats.t_last} µs so far); --on-error skip leaves it out")
        outside.append({"frame": k, "stem": stems[k], "time_us": int(times[k]), "where": where})

    done = set()
    for k, events, t0, t1 in cut_windows(checked_chunks(rec, stats, on_error), times, window_us, count):
        done.add(k)
        if times[k] < stats.t_first:
            outside_recording(k, "before the first event")
            continue
        index, inside = mapper(events.x, events.y)
        inside_t = events.t if inside.all() else events.t[inside]
        inside_p = events.p if inside.all() else events.p[inside]
        frame = represent(representation, index, inside_t, inside_p, height, width, t0, t1, params)
        _write(os.path.join(out_dir, stems[k] + ext), to_uint8(representation, frame, params))
        windows.append({"frame": k, "stem": stems[k], "time_us": int(times[k]), "start_us": int(t0),
                        "events": len(events), "outside_frame": int(len(events) - index.shape[0])})
    for k in range(len(times)):
        if k not in done:
            outside_recording(k, "after the last event")
    report = {
        "recording": os.path.abspath(recording), "format": rec.format, "sensor": list(rec.sensor),
        "frame_size": list(frame_size), "mapping": mapper.kind + (f" {homography_file}" if homography_file else ""),
        "representation": representation, "channels": n_channels, "file_extension": ext,
        "params": {"scale": params.scale, "tau_us": params.tau_us, "bins": int(params.bins)},
        "window": {"us": int(window_us)} if window_us is not None else {"events": int(count)},
        "timestamps": timestamps_source, **stats.as_dict(),
        "frames": len(times), "written": len(windows),
        "empty_windows": sum(1 for w in windows if w["events"] == 0),
        "events_outside_frame": sum(w["outside_frame"] for w in windows),
        "frames_outside_recording": outside, "windows": windows,
    }
    with open(os.path.join(out_dir, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    return report


def _write(path: str, image: np.ndarray) -> None:
    if image.shape[2] == 1:
        import cv2

        if not cv2.imwrite(path, image[:, :, 0]):
            raise OSError(f"{path}: could not be written")
    else:
        np.save(path, image, allow_pickle=False)
