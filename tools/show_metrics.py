#!/usr/bin/env python
"""Print the metrics table of one or more runs: python tools/show_metrics.py OUT/eval_metrics.json ..."""
import argparse
import json
import sys

from cadet_d2.evaluation import condition_table, format_table


def _nan(metrics: dict) -> dict:
    """{metric: value or None} -> {metric: value or NaN} (the JSON writes NaN as null)."""
    return {k: float("nan") if v is None else v for k, v in metrics.items()}


def show(path: str) -> str:
    """The tables of one metrics file (``write_metrics``'s JSON); ValueError naming the file if it is not one."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise ValueError(f"{path}: no \"datasets\" object: not a metrics file of tools/train_net.py")
    lines = [f"{path}  (weights: {data.get('weights') or '-'})",
             format_table({n: _nan(m) for n, m in data["datasets"].items()})]
    if data.get("conditions"):  # CADET.TEST.DROP_MODALITIES: AP per sensor-failure condition
        rows = {c["name"]: {d: _nan(m) for d, m in c["datasets"].items()} for c in data["conditions"]}
        lines.append(condition_table(rows))
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", help="eval_metrics.json files written by tools/train_net.py")
    text = "\n".join(show(path) for path in parser.parse_args(argv).files)
    print(text)
    return text


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
