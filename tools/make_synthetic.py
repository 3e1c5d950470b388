#!/usr/bin/env python
"""Write the synthetic day/night data set (see cadet_d2/data/synthetic.py).

    python tools/make_synthetic.py                      # datasets/synth, 400 + 60 + 60 images
    python tools/make_synthetic.py --classes 3 --out datasets/synth3
    python tools/make_synthetic.py --force --preview docs/images/synthetic_samples.jpg
    python tools/make_synthetic.py --event-stream evt3 --out datasets/synth_events   # RAW recordings + PNGs

A root whose manifest.json holds the same parameters is left as it is ("already there").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from cadet_d2.data.synthetic import make_synthetic_dataset, synthetic_params
from cadet_d2.events.synthetic import STREAM_FORMATS, event_stream_params, make_event_stream_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="datasets/synth", help="data root to write (default: datasets/synth)")
    p.add_argument("--num-images", type=int, default=400, help="images in the root (half day, half night)")
    p.add_argument("--num-day-test", type=int, default=60, help="images in ROOT/daytest1")
    p.add_argument("--num-night-test", type=int, default=60, help="images in ROOT/nighttest1")
    p.add_argument("--classes", type=int, default=1, help="number of classes (person, vehicle, cyclist, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unlabeled-fraction", type=float, default=0.05, help="root images without a label file")
    p.add_argument("--force", action="store_true", help="regenerate even if the root exists")
    p.add_argument("--preview", metavar="PNG", help="also write a montage of 2 day and 2 night images")
    p.add_argument("--event-stream", choices=STREAM_FORMATS,
                   help="write the event channel as one RAW recording per set (this format) with the frame "
                        "times, beside RGB/thermal PNGs (cadet_d2/events/synthetic.py; then convert_events)")
    return p.parse_args(argv)


def check_existing(out: str, params: dict, force: bool) -> str | None:
    """'skip' when ``out`` already holds these parameters, None to generate; exit on a conflict."""
    manifest_path = os.path.join(out, "manifest.json")
    if force:
        return None
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            old = json.load(f).get("params")
        if old == params:
            return "skip"
        sys.exit(f"error: {out} holds a synthetic data set with other parameters:\n  {old}\n"
                 f"requested:\n  {params}\nuse --force to regenerate it or choose another --out")
    image_dir = os.path.join(out, "images")
    if os.path.isdir(image_dir) and any(n.endswith(".npy") for n in os.listdir(image_dir)):
        sys.exit(f"error: {image_dir} holds images but {out} has no manifest.json (not a synthetic root?); "
                 "use --force to overwrite")
    return None


def summary(out: str, manifest: dict, seconds: float | None = None) -> str:
    """One line: images and boxes per set."""
    parts = []
    for name, s in manifest["sets"].items():
        c = s["counts"]
        extra = f", {c['unlabeled']} unlabeled" if c["unlabeled"] else ""
        parts.append(f"{name} {c['images']} images ({c['day']} day/{c['night']} night{extra}) {c['boxes']} boxes")
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return f"{out}: " + "; ".join(parts) + took


def _panel(image: np.ndarray, boxes: list) -> np.ndarray:
    """RGB | thermal | event side by side (BGR for cv2.imwrite) with the boxes drawn."""
    import cv2

    colors = ((0, 255, 0), (0, 0, 255), (255, 128, 0))
    views = [image[..., 2::-1], image[..., 3], image[..., 4]]
    views = [np.ascontiguousarray(v) if v.ndim == 3 else cv2.cvtColor(v, cv2.COLOR_GRAY2BGR) for v in views]
    for v in views:
        for c, x0, y0, x1, y1 in boxes:
            cv2.rectangle(v, (x0, y0), (x1 - 1, y1 - 1), colors[c % 3], 1)
    return np.hstack([cv2.resize(v, (390, 300)) for v in views])


def _read_boxes(label_path: str, h: int, w: int) -> list:
    boxes = []
    if os.path.isfile(label_path):
        for line in open(label_path, encoding="utf-8").read().split("\n"):
            if line.strip():
                c, xc, yc, bw, bh = line.split()
                xc, yc, bw, bh = float(xc) * w, float(yc) * h, float(bw) * w, float(bh) * h
                boxes.append((int(c), round(xc - bw / 2), round(yc - bh / 2), round(xc + bw / 2), round(yc + bh / 2)))
    return boxes


def save_preview(out: str, manifest: dict, path: str) -> None:
    """Montage of the first 2 day and 2 night images of the root (rows: RGB | thermal | event)."""
    import cv2

    root_set = manifest["sets"]["main"]
    day = [s for s, r in root_set["images"].items() if not r["night"]][:2]
    night = [s for s, r in root_set["images"].items() if r["night"]][:2]
    rows = []
    for stem in day + night:
        image = np.load(os.path.join(out, "images", stem + ".npy"))
        boxes = _read_boxes(os.path.join(out, "labels", stem + ".txt"), *image.shape[:2])
        rows.append(_panel(image, boxes))
    if rows:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        cv2.imwrite(path, np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def write_event_streams(args: argparse.Namespace) -> int:
    """The event-stream form of the set, and the commands that turn its recordings into frames."""
    params = event_stream_params(args.num_images, args.num_day_test, args.num_night_test, args.classes, args.seed,
                                 args.unlabeled_fraction, args.event_stream)
    if check_existing(args.out, params, args.force) == "skip":
        print(f"{args.out}: already there (same parameters; --force regenerates)")
        return 0
    start = time.perf_counter()
    manifest = make_event_stream_dataset(args.out, args.num_images, args.num_day_test, args.num_night_test,
                                         args.classes, args.seed, args.unlabeled_fraction, args.event_stream)
    for name, s in manifest["sets"].items():
        d = os.path.normpath(os.path.join(args.out, s["dir"]))
        print(f"{name}: {s['frames']} frames, {s['boxes']} boxes, {s['events_total']} events in {d}/events.raw")
    print(f"{args.out}: written in {time.perf_counter() - start:.1f} s; event frames for each set:")
    for s in manifest["sets"].values():
        d = os.path.normpath(os.path.join(args.out, s["dir"]))
        print(f"  python tools/convert_events.py {d}/events.raw --timestamps {d}/timestamps.txt --rgb-dir {d}/rgb "
              f"--out {d}/event")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.event_stream:
        return write_event_streams(args)
    params = synthetic_params(args.num_images, args.num_day_test, args.num_night_test,
                              args.classes, args.seed, args.unlabeled_fraction)
    if check_existing(args.out, params, args.force) == "skip":
        if args.preview:
            with open(os.path.join(args.out, "manifest.json"), encoding="utf-8") as f:
                save_preview(args.out, json.load(f), args.preview)
        print(f"{args.out}: already there (same parameters; --force regenerates)")
        return 0
    start = time.perf_counter()
    manifest = make_synthetic_dataset(args.out, args.num_images, args.num_day_test, args.num_night_test,
                                      args.classes, args.seed, args.unlabeled_fraction)
    if args.preview:
        save_preview(args.out, manifest, args.preview)
    print(summary(args.out, manifest, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
