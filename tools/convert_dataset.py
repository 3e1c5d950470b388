#!/usr/bin/env python
"""Convert LLVIP, FLIR-aligned, KAIST or M3FD from its own layout into a cadet_d2 data root.

    python tools/convert_dataset.py llvip --src /data/LLVIP --out datasets/llvip
    python tools/convert_dataset.py flir  --src /data/FLIR_aligned --out datasets/flir
    python tools/convert_dataset.py kaist --src /data/kaist-rgbt --out datasets/kaist
    python tools/convert_dataset.py m3fd  --src /data/M3FD --out datasets/m3fd --test-fraction 0.2 --seed 42

Prints pairs and boxes per set and class and what was skipped, and saves the same in
OUT/convert_report.json (see cadet_d2/convert/ and the README).
"""
import sys

from cadet_d2.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
