"""The sensor-failure study (``tools/sensor_failure.py``, docs/robustness.md).

Every arm (a Detectron2 config) is trained without (``nodrop``) and with (``drop``) modality
dropout for every seed, in ``<output>/<arm>_<nodrop|drop>/seed<k>``, and evaluated under the
test-time conditions of the study's ``eval`` options (``CADET.TEST.DROP_MODALITIES`` x
``CADET.TEST.CORRUPT``), which the end-of-training evaluation writes to ``eval_metrics.json``.
A run with weights but no per-condition metrics is evaluated with ``--eval-only``; finished runs
are skipped and an interrupted one resumes. The report gives AP per arm, training and condition
as mean ± std over seeds, and the change that modality dropout brings (drop - nodrop, per seed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import yaml

from ..utils.io import atomic_write_bytes
from .report import mean_std
from .run import fmt_duration
from .spec import parse_seeds

TRAININGS = ("nodrop", "drop")
KEYS = {"name", "output", "seeds", "arms", "baseline", "opts", "dropout", "eval", "env"}
TRAIN_NET = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "tools", "train_net.py")


@dataclass
class SensorStudy:
    path: str
    name: str
    output: str
    seeds: list[int]
    arms: dict[str, str]
    opts: list[str]
    dropout: list[str]
    eval: list[str]
    env: dict[str, str]
    baseline: str = ""

    def run_dir(self, arm: str, training: str, seed: int) -> str:
        return os.path.join(self.output, f"{arm}_{training}", f"seed{seed}")

    def runs(self) -> list[tuple[str, str, int]]:
        """(arm, training, seed), seed-major so that every arm gets a first seed early."""
        return [(a, t, s) for s in self.seeds for a in self.arms for t in TRAININGS]


def load_sensor_study(path: str) -> SensorStudy:
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    unknown = set(raw) - KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(KEYS)}")
    missing = {"name", "output", "arms", "dropout", "eval"} - set(raw)
    if missing:
        raise ValueError(f"{path}: missing keys {sorted(missing)}")
    seeds = parse_seeds(path, raw.get("seeds", 1))
    for arm, cfg in raw["arms"].items():
        if not os.path.isfile(cfg):
            raise FileNotFoundError(f"{path}: arms.{arm}: no such config {cfg}")
    baseline = str(raw.get("baseline", ""))
    if baseline and baseline not in raw["arms"]:
        raise ValueError(f"{path}: baseline {baseline!r} is not one of the arms {list(raw['arms'])}")
    as_str = lambda xs: [str(x) for x in xs or []]  # noqa: E731
    return SensorStudy(path, raw["name"], raw["output"], seeds, dict(raw["arms"]), as_str(raw.get("opts")),
                       as_str(raw["dropout"]), as_str(raw["eval"]), {k: str(v) for k, v in (raw.get("env") or {}).items()},
                       baseline)


def read_conditions(run_dir: str) -> Optional[list[dict]]:
    """The ``conditions`` list of a run's eval_metrics.json, or None."""
    path = os.path.join(run_dir, "eval_metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("conditions")


def command(study: SensorStudy, arm: str, training: str, seed: int) -> list[str]:
    """The train_net.py command of a run: train (resuming), or evaluate its final weights."""
    out = study.run_dir(arm, training, seed)
    args = [sys.executable, TRAIN_NET, "--config-file", study.arms[arm]]
    final = os.path.join(out, "model_final.pth")
    if os.path.isfile(final):
        args += ["--eval-only"]
    elif os.path.isfile(os.path.join(out, "last_checkpoint")):
        args += ["--resume"]
    args += study.opts + (study.dropout if training == "drop" else []) + study.eval
    args += ["SEED", str(seed), "OUTPUT_DIR", out]
    return args + (["MODEL.WEIGHTS", final] if os.path.isfile(final) else [])


def run_study(study: SensorStudy, dry_run: bool = False, echo: Callable[[str], None] = print) -> int:
    """Train and evaluate every unfinished run, one after another; the number that failed."""
    todo = [r for r in study.runs() if read_conditions(study.run_dir(*r)) is None]
    echo(f"[sensor] {len(study.runs()) - len(todo)} of {len(study.runs())} runs done; {len(todo)} to go")
    failed, start = 0, time.time()
    for i, (arm, training, seed) in enumerate(todo):
        out = study.run_dir(arm, training, seed)
        cmd = command(study, arm, training, seed)
        if dry_run:
            echo(" ".join(cmd))
            continue
        os.makedirs(out, exist_ok=True)
        log = os.path.join(out, "eval.log" if "--eval-only" in cmd else "train.log")
        with open(log, "a", encoding="utf-8") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **study.env})
        failed += rc != 0
        left = (time.time() - start) / (i + 1) * (len(todo) - i - 1)
        echo(f"[sensor] {i + 1}/{len(todo)} {arm}_{training} seed{seed}: "
             f"{'done' if rc == 0 else f'FAILED (exit {rc}, see {log})'}; about {fmt_duration(left)} left")
    return failed


def collect(study: SensorStudy) -> dict[tuple[str, str], dict[str, dict[str, list[float]]]]:
    """{(arm, training): {condition: {dataset: [AP per seed, in seed order; NaN if missing]}}}."""
    out = {}
    for arm in study.arms:
        for training in TRAININGS:
            cell: dict[str, dict[str, list[float]]] = {}
            for k, seed in enumerate(study.seeds):
                for cond in read_conditions(study.run_dir(arm, training, seed)) or []:
                    for ds, m in cond["datasets"].items():
                        vals = cell.setdefault(cond["name"], {}).setdefault(ds, [float("nan")] * len(study.seeds))
                        vals[k] = float("nan") if m.get("AP") is None else m["AP"]
            out[(arm, training)] = cell
    return out


def _cell(values: list[float]) -> str:
    mean, std = mean_std(values)
    n = sum(v == v for v in values)
    return "–" if mean is None else f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else "") + ("" if n == len(values) else f" (n={n})")


def _paired_delta(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b) if x == x and y == y]
    mean, std = mean_std(d)
    return "–" if mean is None else f"{mean:+.1f}" + (f" ± {std:.1f}" if std is not None else "")


def report(study: SensorStudy) -> str:
    """Markdown: one AP table per test set (mean ± std over seeds), then drop - nodrop per seed."""
    data = collect(study)
    conds = list(dict.fromkeys(c for cell in data.values() for c in cell))
    sets = list(dict.fromkeys(ds for cell in data.values() for per in cell.values() for ds in per))
    done = sum(read_conditions(study.run_dir(*r)) is not None for r in study.runs())
    lines = [f"# {study.name}", "", f"{done} of {len(study.runs())} runs finished; seeds {study.seeds}; "
             f"AP (COCO, %), mean ± std over seeds. Dropout runs add `{' '.join(study.dropout)}`.", ""]
    for ds in sets:
        lines += [f"## {ds}", "", "| arm | training | " + " | ".join(conds) + " |",
                  "|---|---|" + "---|" * len(conds)]
        for (arm, training), cell in data.items():
            lines.append(f"| {arm} | {training} | " + " | ".join(_cell(cell.get(c, {}).get(ds, [])) for c in conds) + " |")
        if study.baseline:
            lines += ["", f"Δ vs the baseline `{study.baseline}` with the same training on {ds} (paired by seed):", "",
                      "| arm | training | " + " | ".join(conds) + " |", "|---|---|" + "---|" * len(conds)]
            for (arm, training), cell in data.items():
                ref = data[(study.baseline, training)]
                lines.append(f"| {arm} | {training} | " + " | ".join(
                    "ref" if arm == study.baseline else _paired_delta(cell.get(c, {}).get(ds, []), ref.get(c, {}).get(ds, []))
                    for c in conds) + " |")
        lines += ["", f"Modality dropout's effect on {ds} (drop - nodrop, paired by seed):", "",
                  "| arm | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
        for arm in study.arms:
            a, b = data[(arm, "drop")], data[(arm, "nodrop")]
            lines.append(f"| {arm} | " + " | ".join(
                _paired_delta(a.get(c, {}).get(ds, []), b.get(c, {}).get(ds, [])) for c in conds) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(study: SensorStudy) -> str:
    path = os.path.join(study.output, "report.md")
    atomic_write_bytes(path, (report(study) + "\n").encode("utf-8"))
    return path
