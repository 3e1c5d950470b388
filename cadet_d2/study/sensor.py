"""The sensor-failure section of the study report (the study's ``sensor_failure`` arms).

Each detector of ``sensor_failure.arms`` is trained without (``<detector>_nodrop``) and with
(``<detector>_drop``) modality dropout for every seed, and its end-of-training evaluation writes
one entry per test-time condition (``conditions`` of ``CADET.TEST.METRICS_FILE``: clean, then
every ``CADET.TEST.DROP_MODALITIES`` x ``CADET.TEST.CORRUPT``). The section gives AP per
detector, training and condition as mean ± std over seeds, the difference to the baseline
detector with the same training (paired by seed) and what modality dropout changes (drop -
nodrop, paired by seed). Running, resuming, failures and SLURM are the study runner's.
"""
from __future__ import annotations

from .plan import Plan
from .rundir import read_conditions
from .spec import TRAININGS
from .stats import mean_std

Cells = dict[tuple[str, str], dict[str, dict[str, list[float]]]]


def collect(plan: Plan) -> Cells:
    """{(detector, training): {condition: {dataset: [AP per seed, in seed order; NaN if missing]}}}
    over the finished sensor-failure runs."""
    seeds = plan.study.seeds
    out: Cells = {}
    for arm in (a for a in plan.arms if a.phase == "sensor"):
        cell = out.setdefault((arm.detector, arm.training), {})
        for run in (r for r in plan.runs if r.arm is arm):
            for cond in read_conditions(run.dir, run.metrics_file) or []:
                for ds, m in cond["datasets"].items():
                    vals = cell.setdefault(cond["name"], {}).setdefault(ds, [float("nan")] * len(seeds))
                    vals[seeds.index(run.seed)] = float("nan") if m.get("AP") is None else float(m["AP"])
    return out


def _cell(values: list[float]) -> str:
    mean, std = mean_std(values)
    n = sum(v == v for v in values)
    return "–" if mean is None else f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else "") + (
        "" if n == len(values) else f" (n={n})")


def _paired_delta(a: list[float], b: list[float]) -> str:
    """Mean ± std of a - b over the seeds both have; ``(n=k)`` when that is not every seed."""
    pairs = [x - y for x, y in zip(a, b) if x == x and y == y]
    mean, std = mean_std(pairs)
    return "–" if mean is None else f"{mean:+.1f}" + (f" ± {std:.1f}" if std is not None else "") + (
        "" if len(pairs) == max(len(a), len(b)) else f" (n={len(pairs)})")


def report_lines(plan: Plan) -> list[str]:
    """Markdown: per test set, the AP table, Δ to the baseline detector, and drop - nodrop."""
    sf = plan.study.sensor
    data = collect(plan)
    conds = list(dict.fromkeys(c for cell in data.values() for c in cell))
    sets = list(dict.fromkeys(ds for cell in data.values() for per in cell.values() for ds in per))
    runs = [r for r in plan.runs if r.arm.phase == "sensor"]
    done = sum(r.state() == "done" for r in runs)
    lines = ["## sensor failure", "", f"{done} of {len(runs)} runs finished; seeds {plan.study.seeds}; AP (COCO, %), "
             f"mean ± std over seeds, per test-time condition. Dropout runs add `{' '.join(sf.dropout)}`.", ""]
    if sf.baseline:
        base = [r for r in runs if r.arm.detector == sf.baseline]
        missing = sorted({r.arm.name for r in base} - {r.arm.name for r in base if r.state() == "done"})
        if missing:
            lines += [f"**!!! WARNING: BASELINE MISSING: {', '.join(missing)} (the baseline detector `{sf.baseline}`) "
                      "has no finished run, so the Δ tables below have no value for that training. Run it: "
                      f"python tools/sensor_failure.py run {plan.study.path} !!!**", ""]
    for ds in sets:
        head = ["| arm | training | " + " | ".join(conds) + " |", "|---|---|" + "---|" * len(conds)]
        lines += [f"### {ds}", "", *head]
        for (det, training), cell in data.items():
            lines.append(f"| {det} | {training} | " + " | ".join(_cell(cell.get(c, {}).get(ds, [])) for c in conds) + " |")
        if sf.baseline:
            lines += ["", f"Δ vs the baseline `{sf.baseline}` with the same training on {ds} (paired by seed):", "", *head]
            for (det, training), cell in data.items():
                ref = data[(sf.baseline, training)]
                lines.append(f"| {det} | {training} | " + " | ".join(
                    "ref" if det == sf.baseline else
                    _paired_delta(cell.get(c, {}).get(ds, []), ref.get(c, {}).get(ds, [])) for c in conds) + " |")
        lines += ["", f"Modality dropout's effect on {ds} (drop - nodrop, paired by seed):", "",
                  "| arm | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
        for det in sf.arms:
            a, b = data[(det, TRAININGS[1])], data[(det, TRAININGS[0])]
            lines.append(f"| {det} | " + " | ".join(
                _paired_delta(a.get(c, {}).get(ds, []), b.get(c, {}).get(ds, [])) for c in conds) + " |")
        lines.append("")
    return lines
