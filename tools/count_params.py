#!/usr/bin/env python
"""Print (or write) markdown tables of parameters: fusion modules per MiT stage and stage set,
and (``--detectors``) whole detectors: MiT size x fusion x stage set, total / backbone / fusion
parameters and GFLOPs (fvcore) at ``--size H W``.

    python tools/count_params.py [--config-file CFG.yaml] [--detectors] [--out FILE] [KEY VALUE ...]

Trailing KEY VALUE pairs override config keys, e.g. ``CADET.FUSION.GAFF.SE_REDUCTION 8``.
"""
from __future__ import annotations

import argparse
import os

from detectron2.config import get_cfg

from cadet_d2.config import add_cadet_config
from cadet_d2.utils.params import detector_table, fusion_param_table


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="", help="optional YAML config")
    parser.add_argument("--out", default="", help="write the markdown table to this file")
    parser.add_argument("--names", nargs="*", default=None, help="fusion modules (default: all)")
    parser.add_argument("--detectors", action="store_true", help="add the whole-detector table")
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOPs column (faster)")
    parser.add_argument("--size", nargs=2, type=int, default=(320, 416), metavar=("H", "W"),
                        help="input size for GFLOPs (default 320 416, ~native for ~300x390 images)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = add_cadet_config(get_cfg())
    cfg.merge_from_file(args.config_file or os.path.join(os.path.dirname(__file__), "..", "configs", "Base-CADET.yaml"))
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    table = "## Fusion modules: parameters per stage set\n\n" + fusion_param_table(cfg, names=args.names)
    if args.detectors:
        table += "\n## Whole detectors (Faster R-CNN + FPN, dual-stream MiT; frm_ffm outside the stage set)\n\n"
        table += detector_table(cfg, height=args.size[0], width=args.size[1], flops=not args.no_flops)
    if args.out:
        from cadet_d2.utils.io import atomic_write_bytes

        atomic_write_bytes(args.out, table.encode())
    print(table)
    return table


if __name__ == "__main__":
    main()
