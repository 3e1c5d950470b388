#!/usr/bin/env python
"""Print the metrics table of one or more runs: python tools/show_metrics.py OUT/eval_metrics.json ...

A run folder OUT stands for OUT/eval_metrics.json; Detectron2's OUT/metrics.json gives a table per
evaluation made during training (TEST.EVAL_PERIOD)."""
import argparse
import json
import os

import yaml

from cadet_d2.evaluation import condition_table, format_table
from cadet_d2.study.rundir import METRICS_FILE
from cadet_d2.utils.tool import run_tool


def _nan(metrics: dict) -> dict:
    """{metric: value or None} -> {metric: value or NaN} (the JSON writes NaN as null)."""
    return {k: float("nan") if v is None else v for k, v in metrics.items()}


TASKS = ("bbox", "miss_rate")


def _only_test_set(path: str) -> str:
    """The name of the run's one test set, from the config.yaml beside ``path`` ("test set" if unknown)."""
    try:
        with open(os.path.join(os.path.dirname(path), "config.yaml"), encoding="utf-8") as f:
            return str(yaml.safe_load(f)["DATASETS"]["TEST"][0])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return "test set"


def _training_metrics(path: str, text: str) -> str:
    """The evaluations in Detectron2's ``metrics.json`` (one JSON object per line; an evaluation
    writes ``<dataset>/<task>/<metric>`` scalars): one table per evaluated iteration."""
    tables = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {lineno}: not JSON ({e.msg})") from None
        per_set: dict = {}
        for key, value in record.items() if isinstance(record, dict) else ():
            parts = key.split("/")
            if len(parts) in (2, 3) and parts[-2] in TASKS:  # one test set: Detectron2 writes "bbox/AP"
                name = parts[0] if len(parts) == 3 else _only_test_set(path)
                per_set.setdefault(name, {})[parts[-1]] = float("nan") if value is None else value
        if per_set:
            tables.append(f"iteration {record.get('iteration', '?')} (Detectron2's count)\n{format_table(per_set)}")
    if not tables:
        raise ValueError(f"{path}: Detectron2's training metrics without any evaluation (TEST.EVAL_PERIOD 0 and the "
                         "run did not finish?); the final evaluation is in eval_metrics.json")
    return "\n".join([f"{path}  (evaluations during training)", *tables])


def show(path: str) -> str:
    """The tables of one metrics file (``write_metrics``'s JSON, or the evaluations in Detectron2's
    ``metrics.json``); a run folder stands for its ``eval_metrics.json``. ValueError naming the file
    if it is neither."""
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON documents: one per line
            return _training_metrics(path, text)
        raise ValueError(f"{path}: line {e.lineno}: not JSON ({e.msg})") from None
    if isinstance(data, dict) and "iteration" in data and "datasets" not in data:  # a one-line metrics.json
        return _training_metrics(path, text)
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise ValueError(f"{path}: no \"datasets\" object: not a metrics file of tools/train_net.py")
    it, machine = data.get("trained_iterations"), data.get("machine")
    lines = [f"{path}  (weights: {data.get('weights') or '-'}" + (f", after {it} iterations" if it is not None else "")
             + (f"; on {machine}" if machine else "") + ")",
             format_table({n: _nan(m) for n, m in data["datasets"].items()})]
    if data.get("conditions"):  # CADET.TEST.DROP_MODALITIES: AP per sensor-failure condition
        rows = {c["name"]: {d: _nan(m) for d, m in c["datasets"].items()} for c in data["conditions"]}
        lines.append(condition_table(rows))
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="eval_metrics.json files (or run folders) written by tools/train_net.py, or its metrics.json")
    text = "\n".join(show(path) for path in parser.parse_args(argv).files)
    print(text)
    return text


if __name__ == "__main__":
    run_tool(main, also=(OSError,))  # it only reads the files it is given
