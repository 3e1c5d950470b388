#!/usr/bin/env python
"""The sensor-failure study (docs/robustness.md): an alias of tools/ablate.py, whose ``run`` also
writes the report when every run has been tried here.

    python tools/sensor_failure.py run    configs/studies/sensor_failure.yaml [--dry-run | --slurm --submit]
    python tools/sensor_failure.py report configs/studies/sensor_failure.yaml
    python tools/sensor_failure.py plan   configs/studies/sensor_failure.yaml

Every option of tools/ablate.py applies (``--output``, ``--no-retry-failed``, ``--opts ...``).
"""
from __future__ import annotations

import sys

from cadet_d2.study.cli import main


def report_argv(argv: list[str]) -> list[str]:
    """``report`` with the study file, ``--output``, ``--with-optional`` and ``--opts`` of a ``run`` command line."""
    out = ["report", argv[1]]
    rest = argv[2:]
    opts = rest[rest.index("--opts"):] if "--opts" in rest else []
    rest = rest[:len(rest) - len(opts)]
    if "--output" in rest:
        out += ["--output", rest[rest.index("--output") + 1]]
    out += ["--with-optional"] if "--with-optional" in rest else []
    return out + opts


def alias(argv: list[str]) -> int:
    rc = main(argv)
    if len(argv) > 1 and argv[0] == "run" and not {"--dry-run", "--slurm"} & set(argv) and rc in (0, 1):
        return main(report_argv(argv)) or rc
    return rc


if __name__ == "__main__":
    sys.exit(alias(sys.argv[1:]))
