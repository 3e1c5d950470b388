#!/usr/bin/env python
"""Check a data root before training: every image (decoded as the loader decodes it) and label
file, and a summary.

    python tools/check_data.py datasets/synth
    python tools/check_data.py /data/cadet --classes 3 --json check.json
    python tools/check_data.py /data/llvip --headers-only     # quick: headers only, no pixels

Exit code 1 when there are errors (see cadet_d2/data/check.py and docs/data.md, "Checks").
"""
import sys

from cadet_d2.data.check import main
from cadet_d2.utils.tool import run_tool

if __name__ == "__main__":
    run_tool(lambda: sys.exit(main()), also=(OSError,))
