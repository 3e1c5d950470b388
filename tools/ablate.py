#!/usr/bin/env python
"""Plan, run and report an ablation study (docs/study.md).

    python tools/ablate.py plan   configs/studies/cadet48.yaml
    python tools/ablate.py run    configs/studies/cadet48.yaml [--dry-run] [--slurm [--submit]]
    python tools/ablate.py report configs/studies/cadet48.yaml [--flops]

The same as ``python -m cadet_d2.study ...`` (what the SLURM scripts run).
"""
import sys

from cadet_d2.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
