#!/usr/bin/env python
"""Event-camera recording -> one event frame per RGB frame (docs/events.md).

    python tools/convert_events.py rec.raw --timestamps frames.txt --out data/train/event
    python tools/convert_events.py rec.raw --timestamps frames.txt --out data/train/event --rgb-dir data/train/rgb \\
        --window-ms 50 --representation voxel_grid --bins 5
    python tools/convert_events.py rec.h5 --start-us 0 --fps 20 --frames 100 --sensor-size 640 480 --out ev

Formats: Prophesee RAW EVT 2.0/3.0, DAT, iniVation AEDAT 4.0, DSEC-style HDF5, NPY/NPZ arrays
(detected from the header or extension). Writes <stem>.png (one channel) or <stem>.npy (several)
per frame and OUT/events_report.json.
"""
from __future__ import annotations

import sys

from cadet_d2.events.cli import main
from cadet_d2.utils.tool import run_tool

if __name__ == "__main__":
    run_tool(lambda: main(sys.argv[1:]), also=(OSError, ImportError))
