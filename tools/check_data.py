#!/usr/bin/env python
"""Check a data root before training: every image and label file, and a summary.

    python tools/check_data.py datasets/synth
    python tools/check_data.py /data/cadet --classes 3 --json check.json

Exit code 1 when there are errors (see cadet_d2/data/check.py and docs/reliability.md).
"""
import sys

from cadet_d2.data.check import main

if __name__ == "__main__":
    sys.exit(main())
