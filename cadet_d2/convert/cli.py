"""``tools/convert_dataset.py {llvip,flir,kaist,m3fd} --src SRC --out OUT [options]``."""
from __future__ import annotations

import argparse
import os
import sys

from ..data.errors import DataError
from .flir import LAYOUTS, convert_flir
from .kaist import SETTINGS, convert_kaist
from .llvip import convert_llvip
from .m3fd import convert_m3fd
from .report import Report
from .writer import BOX_POLICIES, write_root

NAMES = {"llvip": "LLVIP", "flir": "FLIR-aligned", "kaist": "KAIST", "m3fd": "M3FD"}
# Each data set's converter: (args, report) -> (classes, {set: pairs}), from its own options.
CONVERTERS = {
    "llvip": lambda a, r: convert_llvip(a.src, r, a.boxes_outside),
    "flir": lambda a, r: convert_flir(a.src, r, a.boxes_outside, a.layout),
    "kaist": lambda a, r: convert_kaist(a.src, r, a.boxes_outside, a.annotations, a.setting, a.train_list,
                                        a.test_list),
    "m3fd": lambda a, r: convert_m3fd(a.src, r, a.boxes_outside, a.test_fraction, a.seed),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Convert an RGB-thermal data set from its own layout into a cadet_d2 data root "
                    "(classes.txt, <set>/pairs.csv, <set>/labels/*.txt, <set>/ignore/*.txt).")
    p.add_argument("dataset", choices=sorted(CONVERTERS))
    p.add_argument("--src", required=True, help="the data set's folder as downloaded")
    p.add_argument("--out", required=True, help="the data root to write (CADET.DATA.ROOT)")
    p.add_argument("--boxes-outside", choices=BOX_POLICIES, default="clip",
                   help="a box reaching outside its image: clip it to the image (default) or drop it")
    p.add_argument("--to-npy", action="store_true",
                   help="write <set>/images/<stem>.npy (H x W x 4: RGB, thermal) instead of pairs.csv")
    p.add_argument("--relative-paths", action="store_true",
                   help="pairs.csv paths relative to the folder holding it (default: absolute)")
    p.add_argument("--overwrite", action="store_true", help="replace an OUT written by an earlier conversion")
    g = p.add_argument_group("FLIR")
    g.add_argument("--layout", choices=LAYOUTS, default="auto", help="FLIR: COCO-JSON or VOC layout (default: detect)")
    g = p.add_argument_group("KAIST")
    g.add_argument("--annotations", default="", help="KAIST: annotation tree (default SRC/annotations or SRC)")
    g.add_argument("--setting", choices=SETTINGS, default="reasonable",
                   help="KAIST: 'reasonable' stores persons outside the reasonable subset as ignore regions; "
                        "'all' keeps every person as a label")
    g.add_argument("--train-list", default="", help="KAIST: image-set file of the train frames to keep")
    g.add_argument("--test-list", default="", help="KAIST: image-set file of the test frames to keep")
    g = p.add_argument_group("M3FD")
    g.add_argument("--test-fraction", type=float, default=0.2, help="M3FD: fraction of pairs held out as test")
    g.add_argument("--seed", type=int, default=42, help="M3FD: seed of the split")
    return p


def convert(args) -> Report:
    """Run one conversion from parsed arguments; returns the saved report."""
    report = Report(NAMES[args.dataset], os.path.abspath(args.src))
    if not os.path.isdir(args.src):
        raise DataError(args.src, "--src folder not found")
    classes, sets = CONVERTERS[args.dataset](args, report)
    if not any(sets.values()):
        raise DataError(args.src, f"no {NAMES[args.dataset]} pairs found\n{report.text()}")
    write_root(args.out, classes, sets, report, occlusion=args.dataset == "kaist", to_npy=args.to_npy,
               relative=args.relative_paths, overwrite=args.overwrite)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = convert(args)
    except (DataError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.text())
    written = [s for s in report.sets]
    print(f"wrote {args.out} (sets {', '.join(written)}; summary in {os.path.join(args.out, 'convert_report.json')})")
    if args.to_npy:
        print("train with CADET.INPUT.FILE_CHANNELS 4 CADET.INPUT.MODALITIES \"['rgb', 'thermal']\"")
    return 0
