#!/usr/bin/env python
"""Score results files of other methods against a registered test set: MR^-2 and COCO AP.

MR^-2 in every KAIST devkit setting (CADET.TEST.MISS_RATE.SETTINGS), COCO AP, and the miss-rate
curves of all the files in one figure.

    python tools/evaluate_results.py --config-file configs/datasets/kaist/Base-KAIST.yaml \\
        --results MBNet_result.txt [--results dets/ --results coco.json] [--dataset kaist_test] \\
        [--json scores.json] [--out DIR] [KEY VALUE ...]

A results file is KAIST's text file (``frame, x, y, w, h, score``, frames 1-based in the set's stem
order), a folder of per-frame ``<stem>.txt`` files (``person x1 y1 x2 y2 score``, 0-based) or a COCO
results JSON (cadet_d2/evaluation/results_files.py). ``--dataset`` defaults to the first of
``DATASETS.TEST``. ``--json`` is written as a metrics file (``{"datasets": {set: metrics}}``; with
several files the keys are ``<set> <file>``), readable by tools/show_metrics.py. ``--out`` (default:
the ``--json`` file's folder, else ``evaluate_results``) receives each file's curves
(``<n>/<set>.json``, ``.png``) and ``miss_rate_<set>.png``, all files' curves in one figure.
"""
from __future__ import annotations

import argparse
import os

from detectron2.utils.logger import setup_logger

from cadet_d2.data.datasets import register_from_config
from cadet_d2.engine import load_config
from cadet_d2.evaluation import format_table, write_metrics
from cadet_d2.evaluation.score_results import draw_files, score_file
from cadet_d2.utils.tool import run_tool


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="the data set's config (e.g. configs/datasets/kaist/...)")
    parser.add_argument("--results", action="append", required=True,
                        help="a results file or folder; repeat for several")
    parser.add_argument("--dataset", default="", help="registered test set (default: the first of DATASETS.TEST)")
    parser.add_argument("--json", default="", help="write the metrics here")
    parser.add_argument("--out", default="", help="folder of the curves (default: the --json file's, else "
                                                  "evaluate_results)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    for name in ("cadet_d2", "detectron2"):
        setup_logger(name=name, abbrev_name="cadet" if name == "cadet_d2" else name)
    cfg = load_config(args.config_file, ["CADET.TEST.MISS_RATE.ENABLED", "True"] + list(args.opts))
    names = register_from_config(cfg)
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    if dataset not in names:
        raise ValueError(f"--dataset {dataset!r} is not a registered set of {args.config_file} (sets: {names})")
    out = args.out or (os.path.dirname(os.path.abspath(args.json)) if args.json else "evaluate_results")
    metrics, curves = {}, []
    for i, path in enumerate(args.results):
        key = dataset if len(args.results) == 1 else f"{dataset} {path}"
        key += f" #{i + 1}" if key in metrics else ""  # the same file twice
        metrics[key], curve = score_file(cfg, dataset, path, os.path.join(out, str(i + 1)))
        if curve:
            curves.append((os.path.basename(os.path.normpath(path)), curve))
    print(format_table(metrics))
    figure = os.path.join(out, f"miss_rate_{dataset}.png")
    draw_files(curves, figure, f"{dataset}: miss rate against false positives per image")
    print(f"curves: {figure}")
    if args.json:
        write_metrics(args.json, metrics, results={k: p for k, p in zip(metrics, args.results)})
        print(f"metrics: {args.json}")
    return metrics


if __name__ == "__main__":
    run_tool(main, also=(OSError,))  # a bad path, data set, config or results file: "error: ...", no traceback
