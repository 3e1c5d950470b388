#!/usr/bin/env python
"""Draw the ground truth of a registered data set, as stored or after the training mapper.

    python tools/visualize_data.py --config-file CFG.yaml --dataset synth_daytest1 --output OUT \
        [--num 8] [--train-aug] [--seed 0] [KEY VALUE ...]

Registers the data sets of CADET.DATA (names <NAME>_train, <NAME>_test, <NAME>_<test set>) and
writes OUT/<stem>.png per image: the modalities the config uses, side by side, with the boxes.
--train-aug runs the training mapper (resize, flip, RGB jitter) and draws the transformed boxes on
the augmented image (OUT/<stem>_aug.png): a check of the mapper.
"""
from __future__ import annotations

import argparse

from detectron2.utils.logger import setup_logger

from cadet_d2.engine import load_config
from cadet_d2.inference import draw_dataset
from cadet_d2.utils.tool import run_tool


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="YAML config (CADET.DATA, CADET.INPUT, INPUT)")
    parser.add_argument("--dataset", required=True, help="registered data set, e.g. synth_train, synth_daytest1")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--num", type=int, default=8, help="first N images (0 = all)")
    parser.add_argument("--train-aug", action="store_true", help="draw after the training mapper")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training augmentations")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="cadet_d2", abbrev_name="cadet")
    cfg = load_config(args.config_file, args.opts)
    written = draw_dataset(cfg, args.dataset, args.output, num=args.num, train_aug=args.train_aug, seed=args.seed)
    print(f"{len(written)} pictures in {args.output}")
    return written


if __name__ == "__main__":
    run_tool(main)  # bad path, data set, config or file: "error: ...", no traceback
