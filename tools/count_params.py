#!/usr/bin/env python
"""Print (or write) a markdown table of fusion-module parameters per MiT stage and stage set.

    python tools/count_params.py [--config-file CFG.yaml] [--out FILE] [KEY VALUE ...]

Trailing KEY VALUE pairs override config keys, e.g. ``CADET.FUSION.GAFF.SE_REDUCTION 8``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.config import get_cfg  # noqa: E402

from cadet_d2.config import add_cadet_config  # noqa: E402
from cadet_d2.utils.params import fusion_param_table  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="", help="optional YAML config")
    parser.add_argument("--out", default="", help="write the markdown table to this file")
    parser.add_argument("--names", nargs="*", default=None, help="fusion modules (default: all)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = add_cadet_config(get_cfg())
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    table = fusion_param_table(cfg, names=args.names)
    if args.out:
        from cadet_d2.utils.io import atomic_write_bytes

        atomic_write_bytes(args.out, table.encode())
    print(table)
    return table


if __name__ == "__main__":
    main()
