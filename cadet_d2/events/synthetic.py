"""The synthetic scenes (:mod:`cadet_d2.data.synthetic`) as an event camera would give them: per set one
recording (Prophesee RAW EVT 3.0 or 2.0) of the event channel and the RGB frames' times, beside
RGB and thermal PNG files, so that the path recording -> event frames (tools/convert_events.py)
-> training -> evaluation runs without a download.

Layout of :func:`make_event_stream_dataset` (one data root; the test sets alike)::

    ROOT/rgb/<stem>.png, ROOT/thermal/<stem>.png   the scene, padded to the sensor size (black)
    ROOT/labels/<stem>.txt                         YOLO labels, normalised to the sensor size
    ROOT/events.raw                                EVT 3.0 (or 2.0): the event channel as events
    ROOT/timestamps.txt                            frame k's time in µs, one per line
    ROOT/pairs.csv                                 stem,rgb,thermal,event (event/<stem>.png, to convert)
    ROOT/daytest1/..., ROOT/nighttest1/...         the same per test set
    ROOT/manifest.json                             parameters and counts

Frame k is at (k + 1) * ``frame_us``; its event pixels (ON 255, OFF 128 in the event channel)
become one event each at a time drawn uniformly in [k * frame_us, (k + 1) * frame_us), so that a
window of ``frame_us`` before each frame holds exactly that frame's events. The recording runs on
for ``frame_us`` after the last frame with ``TAIL_EVENTS`` noise events (as a camera's does), so
that the last frame lies inside it.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np

from ..data.synthetic import (EVENT_OFF, EVENT_ON, HEIGHT_RANGE, SET_NAMES, SETS, WIDTH_RANGE, _unlabeled, class_names,
                        image_rng, render_scene, synthetic_params, yolo_lines)

SENSOR = (WIDTH_RANGE[1], HEIGHT_RANGE[1])  # (width, height): every scene fits
FRAME_US = 50_000
STREAM_FORMATS = ("evt3", "evt2")
TAIL_EVENTS = 16


def raw_header(fmt: str, width: int, height: int) -> bytes:
    """The text header of a RAW file this project writes."""
    version = {"evt3": "3.0", "evt2": "2.0"}[fmt]
    return (f"% evt {version}\n% format {fmt.upper()};height={height};width={width}\n% geometry {width}x{height}\n"
            f"% integrator_name cadet_d2\n% end\n").encode("ascii")


def write_raw(path: str, fmt: str, t, x, y, p, sensor: tuple[int, int]) -> None:
    """Write events (time order) as a Prophesee RAW file of ``fmt`` ("evt3" or "evt2")."""
    from .evt2 import encode_evt2
    from .evt3 import encode_evt3

    words = (encode_evt3 if fmt == "evt3" else encode_evt2)(t, x, y, p)
    with open(path, "wb") as f:
        f.write(raw_header(fmt, *sensor))
        f.write(words.tobytes())


def frame_events(rng: np.random.Generator, event: np.ndarray, k: int, frame_us: int):
    """(t, x, y, p) of frame k's event channel (H, W) uint8, in time order."""
    y, x = np.nonzero((event == EVENT_ON) | (event == EVENT_OFF))
    p = (event[y, x] == EVENT_ON).astype(np.uint8)
    t = k * frame_us + rng.integers(0, frame_us, size=x.shape[0])
    order = np.argsort(t, kind="stable")
    return t[order], x[order], y[order], p[order]


def _pad(image: np.ndarray) -> np.ndarray:
    out = np.zeros((SENSOR[1], SENSOR[0]) + image.shape[2:], dtype=image.dtype)
    out[:image.shape[0], :image.shape[1]] = image
    return out


def _write_stream_set(root: str, set_index: int, n: int, seed: int, num_classes: int, unlabeled: set[int],
                      fmt: str, frame_us: int) -> dict:
    folder, prefix, night_flag = SETS[set_index]
    base = os.path.join(root, folder)
    for sub in ("rgb", "thermal", "labels"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    parts, rows, times, boxes_total = [], ["stem,rgb,thermal,event"], [], 0
    for i in range(n):
        night = bool(i % 2) if night_flag is None else night_flag
        image, boxes = render_scene(image_rng(seed, set_index, i), night, num_classes)
        stem = f"{prefix}{i:06d}"
        cv2.imwrite(os.path.join(base, "rgb", stem + ".png"), _pad(image[:, :, 2::-1]))
        cv2.imwrite(os.path.join(base, "thermal", stem + ".png"), _pad(image[:, :, 3]))
        if i not in unlabeled:
            with open(os.path.join(base, "labels", stem + ".txt"), "w", encoding="utf-8", newline="\n") as f:
                f.write(yolo_lines(boxes, SENSOR[1], SENSOR[0]))
            boxes_total += len(boxes)
        parts.append(frame_events(np.random.default_rng([seed, set_index, i, 1]), image[:, :, 4], i, frame_us))
        rows.append(f"{stem},rgb/{stem}.png,thermal/{stem}.png,event/{stem}.png")
        times.append((i + 1) * frame_us)
    tail = np.random.default_rng([seed, set_index, n, 1])
    parts.append((np.sort(n * frame_us + tail.integers(0, frame_us, TAIL_EVENTS)),
                  tail.integers(0, SENSOR[0], TAIL_EVENTS), tail.integers(0, SENSOR[1], TAIL_EVENTS),
                  tail.integers(0, 2, TAIL_EVENTS)))
    t, x, y, p = (np.concatenate([q[j] for q in parts]) for j in range(4))
    write_raw(os.path.join(base, "events.raw"), fmt, t, x, y, p, SENSOR)
    with open(os.path.join(base, "timestamps.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(f"{v}\n" for v in times))
    with open(os.path.join(base, "pairs.csv"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(rows) + "\n")
    counts = np.bincount(p, minlength=2)
    return {"dir": folder or ".", "frames": n, "boxes": boxes_total, "events_total": int(t.shape[0]),
            "events_by_polarity": {"0": int(counts[0]), "1": int(counts[1])}}


def event_stream_params(num_images: int, num_day_test: int, num_night_test: int, num_classes: int, seed: int,
                        unlabeled_fraction: float, fmt: str, frame_us: int = FRAME_US) -> dict:
    """The generation parameters as stored in ``manifest.json``."""
    return {**synthetic_params(num_images, num_day_test, num_night_test, num_classes, seed, unlabeled_fraction),
            "event_stream": fmt, "frame_us": int(frame_us)}


def make_event_stream_dataset(out: str, num_images: int = 400, num_day_test: int = 60, num_night_test: int = 60,
                              num_classes: int = 1, seed: int = 0, unlabeled_fraction: float = 0.05,
                              fmt: str = "evt3", frame_us: int = FRAME_US) -> dict:
    """Write the event-stream form of the synthetic set at ``out`` (module docstring); the manifest."""
    if fmt not in STREAM_FORMATS:
        raise ValueError(f"event stream format {fmt!r}: choose from {list(STREAM_FORMATS)}")
    params = event_stream_params(num_images, num_day_test, num_night_test, num_classes, seed, unlabeled_fraction,
                                 fmt, frame_us)
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    names = class_names(num_classes)
    with open(os.path.join(out, "classes.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(n + "\n" for n in names))
    sets = {}
    for s, n in enumerate((num_images, num_day_test, num_night_test)):
        unlabeled = _unlabeled(seed, n, unlabeled_fraction) if s == 0 else set()
        sets[SET_NAMES[s]] = _write_stream_set(out, s, n, seed, num_classes, unlabeled, fmt, frame_us)
    manifest = {"generator": "cadet_d2.events.synthetic", "params": params, "classes": names,
                "sensor": list(SENSOR), "sets": sets}
    with open(manifest_path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest
