#!/usr/bin/env python
"""Predict boxes on .npy images or paired image files: COCO-style predictions.json and, with --vis, pictures.

    python tools/predict.py --config-file CFG.yaml --input X.npy DIR pairs.csv ... --output OUT [--vis] \
        [--vis-fusion] [--score-thresh 0.5] [--batch-size 4] [--device cpu|cuda] [KEY VALUE ...]
    python tools/predict.py ... --export-dir output/export/demo --runtime openvino_bf16 --threads 2   # an export

Writes OUT/predictions.json (one entry per box: image_id, file_name, category_id, bbox [x, y, w, h]
in original pixels, score) and, with --vis or --vis-fusion, OUT/vis/<stem>.png. A folder gives its
*.npy files (--recursive: those of its sub-folders too); a pairs.csv index (docs/data.md) gives its
pairs of image files (file_name: the RGB file; pictures named by the pair's stem). Weights: MODEL.WEIGHTS (trailing
KEY VALUE pairs override config keys, e.g. MODEL.WEIGHTS output/model_final.pth); with --runtime, the
exported model of --export-dir (tools/export.py) runs instead, one image at a time.
"""
from __future__ import annotations

import argparse
import os
import re

from detectron2.utils.logger import setup_logger

from cadet_d2.engine import load_config
from cadet_d2.export import RUNNERS
from cadet_d2.export.openvino import MissingPackageError
from cadet_d2.inference import predict_files
from cadet_d2.utils.tool import run_tool


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="YAML config of the model")
    parser.add_argument("--input", required=True, nargs="+", help=".npy files, folders of them, and/or pairs.csv indexes")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--recursive", action="store_true", help="also read the .npy files of sub-folders")
    parser.add_argument("--vis", action="store_true", help="write OUT/vis/<stem>.png per image")
    parser.add_argument("--vis-fusion", action="store_true",
                        help="pictures with the fusion heat maps (CSSA attention, GAFF guidance); implies --vis")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="drop detections scoring lower")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="overrides MODEL.DEVICE")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--runtime", choices=["pytorch", *RUNNERS], default="pytorch",
                        help="pytorch (MODEL.WEIGHTS), or an export of --export-dir (docs/export.md)")
    parser.add_argument("--export-dir", default="", help="export folder (tools/export.py) for --runtime")
    parser.add_argument("--threads", type=int, default=0, help="--runtime's threads (0: the runtime's default)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    keys = [p for p in args.input if re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+", p) and not os.path.exists(p)]
    if keys:
        parser.error(f"--input took {keys[0]!r}: put config overrides KEY VALUE after the other options")
    if (args.runtime != "pytorch") != bool(args.export_dir):
        parser.error("--export-dir goes with --runtime other than pytorch (and such a --runtime needs it)")
    if args.vis_fusion and args.runtime != "pytorch":
        parser.error("--vis-fusion draws the PyTorch model's fusion maps: use it with --runtime pytorch")
    for name in ("cadet_d2", "detectron2", "fvcore"):
        setup_logger(name=name, abbrev_name="cadet" if name == "cadet_d2" else name)
    opts = list(args.opts) + (["MODEL.DEVICE", args.device] if args.device else [])
    cfg = load_config(args.config_file, opts)
    runner = None
    if args.runtime != "pytorch":
        from cadet_d2.export import check_contract, load_runner, read_meta

        check_contract(read_meta(args.export_dir), cfg, args.export_dir)
        runner = load_runner(args.export_dir, args.runtime, args.threads)
    return predict_files(cfg, args.input, args.output, batch_size=args.batch_size, score_thresh=args.score_thresh,
                         vis=args.vis, vis_fusion=args.vis_fusion, recursive=args.recursive,
                         progress=not args.no_progress, runner=runner)


if __name__ == "__main__":
    run_tool(main, also=(MissingPackageError,))  # bad path, data set, config or weights file: "error: ...", no traceback
