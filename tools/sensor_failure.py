#!/usr/bin/env python
"""Train and evaluate the sensor-failure study, or write its report (docs/robustness.md).

    python tools/sensor_failure.py run    configs/studies/sensor_failure.yaml [--dry-run]
    python tools/sensor_failure.py report configs/studies/sensor_failure.yaml
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cadet_d2.study.sensor import load_sensor_study, report, run_study, write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("study", help="study file, e.g. configs/studies/sensor_failure.yaml")
    parser.add_argument("--dry-run", action="store_true", help="run: print the commands only")
    parser.add_argument("--output", help="output root instead of the study file's")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (e.g. one process per seed)")
    args = parser.parse_args(argv)
    study = load_sensor_study(args.study)
    if args.output:
        study.output = args.output
    if args.command == "run":
        seeds = study.seeds
        if args.seeds:  # run these seeds only; the report below covers them all
            study.seeds = [s for s in seeds if s in args.seeds]
        failed = run_study(study, dry_run=args.dry_run)
        study.seeds = seeds
        if failed:
            print(f"[sensor] {failed} runs failed", file=sys.stderr)
            return 1
    print(report(study))
    print(f"[sensor] report written to {write_report(study)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
