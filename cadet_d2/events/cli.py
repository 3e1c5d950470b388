"""``tools/convert_events.py RECORDING (--timestamps FILE | --start-us S --fps F --frames N) --out DIR``."""
from __future__ import annotations

import argparse
import os

from ..data.errors import DataError
from .convert import convert_recording, frame_times_at_rate, read_timestamps
from .formats import FORMATS
from .homography import load_homography
from .recording import ON_ERROR
from .represent import DEFAULT_BINS, DEFAULT_SCALE, DEFAULT_TAU_US, REPRESENTATIONS, RepresentationParams

DEFAULT_WINDOW_MS = 50.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write one event frame per RGB frame of an event-camera recording "
                                            "(docs/events.md) and OUT/events_report.json.")
    p.add_argument("recording", help="RAW (EVT 2.0/3.0), DAT, AEDAT 4.0, HDF5 (DSEC) or NPY/NPZ file")
    p.add_argument("--out", required=True, help="folder of the event frames (the event modality's folder)")
    t = p.add_argument_group("frame times (one of)")
    t.add_argument("--timestamps", help="text file: one integer time in µs per RGB frame, one per line")
    t.add_argument("--start-us", type=int, help="time of the first frame (µs), with --fps and --frames")
    t.add_argument("--fps", type=float, help="frame rate")
    t.add_argument("--frames", type=int, help="number of frames")
    p.add_argument("--rgb-dir", help="name frame k after the k-th image (sorted by name) of this RGB folder, so "
                                     "that the paired-file source pairs them by stem; default frame_000000, ...")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--window-ms", type=float,
                   help=f"events of the Δt before each frame (default {DEFAULT_WINDOW_MS:g} ms)")
    w.add_argument("--window-events", type=int, help="instead: the last N events before each frame")
    p.add_argument("--representation", choices=REPRESENTATIONS, default="signed_count",
                   help="signed_count (1 channel, PNG), polarity_counts (2), time_surface (1), voxel_grid (--bins)")
    p.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="grey levels per event in the 8-bit frames")
    p.add_argument("--tau-ms", type=float, default=DEFAULT_TAU_US / 1000, help="time-surface decay constant")
    p.add_argument("--bins", type=int, default=DEFAULT_BINS, help="voxel-grid temporal bins B (channels)")
    p.add_argument("--format", choices=FORMATS, help="the recording's format (default: from header or extension)")
    p.add_argument("--sensor-size", type=int, nargs=2, metavar=("W", "H"),
                   help="sensor size where the file gives none (DAT without Width/Height, HDF5, NPY)")
    p.add_argument("--frame-size", type=int, nargs=2, metavar=("W", "H"),
                   help="size of the frames written (default: the first --rgb-dir image's, else the sensor's)")
    p.add_argument("--homography", help="3x3 matrix (text, 9 numbers) mapping sensor pixels to frame pixels; "
                                        "default: a plain resize from the sensor size to the frame size")
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="events outside the sensor or going back in time, frames outside the recording: stop "
                        "naming the file and event/line (raise), or drop/leave out and count them (skip)")
    return p


def _rgb_stems(folder: str) -> tuple[list[str], str]:
    from ..layout import IMAGE_EXTENSIONS

    if not os.path.isdir(folder):
        raise DataError(folder, "--rgb-dir folder not found")
    files = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(folder, f"no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.splitext(f)[0] for f in files], os.path.join(folder, files[0])


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    rate = (args.start_us, args.fps, args.frames)
    if args.timestamps and any(v is not None for v in rate):
        raise ValueError("give --timestamps or --start-us/--fps/--frames, not both")
    if args.timestamps:
        times, source = read_timestamps(args.timestamps), os.path.abspath(args.timestamps)
    elif all(v is not None for v in rate):
        times = frame_times_at_rate(*rate)
        source = f"start {args.start_us} µs, {args.fps:g} fps, {args.frames} frames"
    else:
        raise ValueError("give the frame times: --timestamps FILE, or --start-us, --fps and --frames")
    stems, frame_size = None, args.frame_size
    if args.rgb_dir:
        from ..data.images import image_size

        stems, first = _rgb_stems(args.rgb_dir)
        if len(stems) != len(times):
            raise DataError(args.rgb_dir, f"{len(stems)} RGB images but {len(times)} frame times ({source})")
        if frame_size is None:
            h, w = image_size(first)
            frame_size = (w, h)
    window_us = None if args.window_events else int(round((args.window_ms or DEFAULT_WINDOW_MS) * 1000))
    report = convert_recording(
        args.recording, times, args.out, stems, representation=args.representation, window_us=window_us,
        count=args.window_events, fmt=args.format, sensor=tuple(args.sensor_size) if args.sensor_size else None,
        frame_size=tuple(frame_size) if frame_size else None,
        homography=load_homography(args.homography) if args.homography else None,
        homography_file=args.homography or "", on_error=args.on_error,
        params=RepresentationParams(args.scale, args.tau_ms * 1000, args.bins), timestamps_source=source)
    print(f"{args.out}: {report['written']}/{report['frames']} {args.representation} frames "
          f"({report['channels']} channel{'s' * (report['channels'] > 1)}, {report['file_extension']}) from "
          f"{report['events_total']} events ({report['format']}, sensor {report['sensor'][0]}x{report['sensor'][1]}); "
          f"empty windows {report['empty_windows']}, events outside the frame {report['events_outside_frame']}, "
          f"frames outside the recording {len(report['frames_outside_recording'])}; report "
          f"{os.path.join(args.out, 'events_report.json')}")
    return report
