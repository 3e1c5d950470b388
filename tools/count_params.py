#!/usr/bin/env python
"""Print (or write) markdown tables of parameters: fusion modules per MiT stage and stage set,
and (``--detectors``) whole detectors: MiT size x fusion x stage set, total / backbone / fusion
parameters and GFLOPs (fvcore) at ``--size H W``.

    python tools/count_params.py [--config-file CFG.yaml] [--detectors] [--out FILE] [KEY VALUE ...]

Trailing KEY VALUE pairs override config keys, e.g. ``CADET.FUSION.GAFF.SE_REDUCTION 8``; the config is
validated like tools/train_net.py's. With ``--config-file``, the detector that config describes is
counted first.
"""
from __future__ import annotations

import argparse
import os
import re

from cadet_d2.engine import load_config
from cadet_d2.utils.params import detector_stats, detector_table, fusion_param_table
from cadet_d2.utils.tool import run_tool

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "Base-CADET.yaml")


def config_row(cfg, config_file: str) -> str:
    """The detector the config itself describes (built on the CPU): its parameters."""
    s = detector_stats(cfg, flops=False)
    f = cfg.CADET.FUSION
    what = f"{cfg.MODEL.META_ARCHITECTURE}, backbone {cfg.MODEL.BACKBONE.NAME}, MiT {cfg.CADET.BACKBONE.SIZE}, "
    if s["fused"]:
        what += f"fusion {f.NAME} at stages {list(f.STAGES)}" + \
            (f" ({f.DEFAULT} elsewhere)" if set(f.STAGES) != {1, 2, 3, 4} else "")
    else:
        what += "one stream per detector, no fusion module (CADET.FUSION.* unused)"
    return (f"## This config: {config_file}\n\n{what}\n\n"
            "| total params (M) | backbone (M) | fusion params |\n|---:|---:|---:|\n"
            f"| {s['params'] / 1e6:.2f} | {s['backbone_params'] / 1e6:.2f} | {s['fusion_params']:,} |\n\n")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="", help="optional YAML config (its own detector is counted first)")
    parser.add_argument("--out", default="", help="write the markdown table to this file")
    parser.add_argument("--names", nargs="*", default=None, help="fusion modules (default: all)")
    parser.add_argument("--detectors", action="store_true", help="add the whole-detector table")
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOPs column (faster)")
    parser.add_argument("--size", nargs=2, type=int, default=(320, 416), metavar=("H", "W"),
                        help="input size for GFLOPs (default 320 416, ~native for ~300x390 images)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    keys = [n for n in args.names or [] if re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+", n)]
    if keys:
        parser.error(f"--names took {keys[0]!r}: put config overrides KEY VALUE after the other options")
    # validated like tools/train_net.py's config: an unknown key or a bad value stops, naming it
    # (counts need no weights: the ImageNet MiT and late-fusion branch files are not read)
    cfg = load_config(args.config_file or BASE, [*args.opts, "MODEL.DEVICE", "cpu", "CADET.BACKBONE.PRETRAINED", "",
                                                 "CADET.LATE.WEIGHTS", "[]"])
    table = config_row(cfg, args.config_file) if args.config_file else ""
    table += "## Fusion modules: parameters per stage set\n\n" + fusion_param_table(cfg, names=args.names)
    if args.detectors:
        table += "\n## Whole detectors (Faster R-CNN + FPN, dual-stream MiT; frm_ffm outside the stage set)\n\n"
        table += detector_table(cfg, height=args.size[0], width=args.size[1], flops=not args.no_flops)
    if args.out:
        from cadet_d2.utils.io import atomic_write_bytes

        atomic_write_bytes(args.out, table.encode())
    print(table)
    return table


if __name__ == "__main__":
    run_tool(main)  # a bad config file, key or value: "error: ...", no traceback
