#!/usr/bin/env python
"""Benchmark a cadet_d2 detector: images/s, peak memory, GFLOPs; prints and writes JSON.

    python tools/benchmark.py --config-file configs/baselines/frm_ffm_mit_b1.yaml --mode train \
        --iters 10 --batch 2 --size 301 391 MODEL.DEVICE cpu
"""
import argparse
import json

from cadet_d2.engine import load_config
from cadet_d2.utils.benchmark import benchmark
from cadet_d2.utils.io import atomic_write_json


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=2, help="images per step")
    p.add_argument("--size", nargs=2, type=int, default=(301, 391), metavar=("H", "W"))
    p.add_argument("--flops", action="store_true", help="also count GFLOPs per image (fvcore)")
    p.add_argument("--json", default="", help="write the result here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    result = benchmark(cfg, args.mode, args.iters, args.warmup, args.batch, *args.size, flops=args.flops)
    result["config"] = args.config_file
    result["opts"] = args.opts
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
