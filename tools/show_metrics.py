#!/usr/bin/env python
"""Print the metrics table of one or more runs: python tools/show_metrics.py OUT/eval_metrics.json ..."""
import argparse
import json

from cadet_d2.evaluation import condition_table, format_table


def _nan(metrics: dict) -> dict:
    """{metric: value or None} -> {metric: value or NaN} (the JSON writes NaN as null)."""
    return {k: float("nan") if v is None else v for k, v in metrics.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", help="eval_metrics.json files written by tools/train_net.py")
    for path in parser.parse_args().files:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        metrics = {n: _nan(m) for n, m in data["datasets"].items()}
        print(f"{path}  (weights: {data.get('weights') or '-'})")
        print(format_table(metrics))
        if data.get("conditions"):  # CADET.TEST.DROP_MODALITIES: AP per sensor-failure condition
            rows = {c["name"]: {d: _nan(m) for d, m in c["datasets"].items()} for c in data["conditions"]}
            print(condition_table(rows))


if __name__ == "__main__":
    main()
