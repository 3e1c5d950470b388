"""``python -m cadet_d2.study``: the study command line (what tools/ablate.py runs; docs/study.md)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
