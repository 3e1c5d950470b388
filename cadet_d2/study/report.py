"""The study report: ``report.md``, ``results.csv`` (one row per arm), ``runs.csv`` (one row per
run) and PNG plots in ``<study output>/report/``.

One table per phase (backbone baselines, each fusion study's phase 1 and phase 2, modality),
each headed by the baseline of the same backbone and schedule. Cells are mean ± sample std over
the finished seeds; Δ = arm mean - baseline mean; the interval is a paired bootstrap over the
test images of ΔAP (:mod:`cadet_d2.study.bootstrap`). A missing baseline is a loud warning in
the table and on stdout.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..evaluation import METRICS
from .bootstrap import PairedBootstrap
from .costs import arm_params, run_costs
from .plan import Arm, Plan, fmt_value, make_plan
from .rundir import args_diff, read_status, training_args
from .spec import Study
from .stats import fmt_duration, fmt_mean_std as _ms, fmt_number as _f, mean_or_none as _mean, mean_std


@dataclass
class ArmResult:
    arm: Arm
    seeds: list[int]  # planned
    done: list[tuple[int, str, dict]] = field(default_factory=list)  # (seed, run dir, metrics)
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (seed, run dir, error)
    costs: list[dict] = field(default_factory=list)  # per finished run
    params: dict = field(default_factory=dict)

    @property
    def dirs(self) -> list[str]:
        return [d for _, d, _ in self.done]

    def values(self, dataset: str, metric: str) -> list[float]:
        out = []
        for _, _, m in self.done:
            v = m.get(dataset, {}).get(metric)
            out.append(float("nan") if v is None else float(v))
        return out


def collect(plan: Plan, flops: bool = False, echo: Callable[[str], None] = print) -> dict[str, ArmResult]:
    """Finished/failed runs, metrics, costs and (for arms with results) parameters of every arm."""
    ims = int(plan.opt_value("SOLVER.IMS_PER_BATCH") or 0)
    max_iter = int(plan.opt_value("SOLVER.MAX_ITER") or 0)
    out = {}
    for arm in plan.arms:
        res = ArmResult(arm, list(plan.study.seeds))
        if not arm.pending:
            for run in (r for r in plan.runs if r.arm is arm):
                state = run.state()
                if state == "done":
                    res.done.append((run.seed, run.dir, run.metrics()))
                    res.costs.append(run_costs(run.dir, ims, max_iter))
                elif state == "failed":
                    res.failed.append((run.seed, run.dir, str(read_status(run.dir).get("error"))))
            if res.done and arm.phase != "sensor":  # the sensor-failure section reports AP only
                try:
                    res.params = arm_params(plan, arm, flops)
                except Exception as e:  # a report without parameters beats no report
                    echo(f"warning: parameters of {arm.name} not counted: {e}")
        out[arm.name] = res
    return out


# ---- formatting -------------------------------------------------------------------------------
def _delta(arm: ArmResult, base: Optional[ArmResult], dataset: str, metric: str) -> Optional[float]:
    if base is None or not base.done:
        return None
    a, b = mean_std(arm.values(dataset, metric))[0], mean_std(base.values(dataset, metric))[0]
    return None if a is None or b is None else a - b


class Reporter:
    """Builds the report of one plan (bootstrap intervals cached across tables)."""

    def __init__(self, plan: Plan, results: dict[str, ArmResult], resamples: int, echo: Callable[[str], None]):
        self.plan, self.results, self.echo = plan, results, echo
        rep = plan.study.report
        self.sets = {label: f"{plan.data_name}_{suffix}" for label, suffix in rep["sets"].items()}
        b = rep["bootstrap"]
        self.main = b["set"] if b["set"] in self.sets else next(iter(self.sets))
        self.boot = PairedBootstrap(resamples, int(b.get("seed", 0)), float(b.get("level", 0.95)))
        self.intervals: dict[str, Optional[dict]] = {}
        self.warnings: list[str] = []
        self.gaps: dict[str, list[str]] = {}  # run key -> what its cells lack (metrics, predictions)
        self.unpaired: dict[str, tuple[list[int], list[int]]] = {}  # arm -> (its seeds, the baseline's) when they differ

    def _gap(self, res: ArmResult, seeds: list[int], what: str) -> None:
        for seed in seeds:
            gaps = self.gaps.setdefault(f"{res.arm.name}/seed{seed}", [])
            if what not in gaps:
                gaps.append(what)

    def interval(self, arm: ArmResult, base: Optional[ArmResult]) -> Optional[dict]:
        if base is None or not base.done or not arm.done or arm.arm.name == base.arm.name:
            return None
        if arm.arm.name not in self.intervals:
            ds = self.sets[self.main]
            try:
                self.intervals[arm.arm.name] = self.boot.delta_interval(arm.dirs, base.dirs, ds)
            except (ValueError, OSError) as e:
                self.warnings.append(f"Warning: no ΔAP interval for {arm.arm.name}: {e}")
                self.intervals[arm.arm.name] = None
            for res in (arm, base):
                have = set(self.boot.runs_with_predictions(res.dirs, ds))
                self._gap(res, [s for s, d, _ in res.done if d not in have],
                          f"predictions inference/{ds}/ (not in the {self.main} AP interval)")
        return self.intervals[arm.arm.name]

    def cell(self, res: ArmResult, dataset: str, metric: str, label: str) -> str:
        """``mean ± std`` over the finished seeds that have the metric, with ``(k/n seeds)`` when
        some finished seeds lack it (each named in the report's warnings)."""
        values = res.values(dataset, metric)
        have = [not math.isnan(v) for v in values]
        text = _ms(values)
        if 0 < sum(have) < len(values):
            self._gap(res, [s for (s, _, _), h in zip(res.done, have) if not h], f"{label} {metric}")
            text += f" ({sum(have)}/{len(values)} seeds)"
        return text

    def header(self) -> list[str]:
        others = [s for s in self.sets if s != self.main]
        cols = ["arm", "seeds", f"{self.main} AP", "ΔAP", f"ΔAP {int(self.boot.level * 100)}% CI"]
        for m in METRICS[1:]:
            cols += [m, f"Δ{m}"]
        for s in others:
            cols += [f"{s} AP", f"Δ {s} AP"]
        return cols + ["params (M)", "fusion params (M)", "GFLOPs", "train time", "img/s", "peak RSS (GiB)",
                       "peak GPU (GiB)"]

    def row(self, res: ArmResult, base: Optional[ArmResult], is_ref: bool = False) -> list[str]:
        main = self.sets[self.main]
        name = f"**{res.arm.name}** (baseline)" if is_ref else res.arm.name
        seeds = f"{len(res.done)}/{len(res.seeds)}" + (f" ({len(res.failed)} failed)" if res.failed else "")
        ci = self.interval(res, base)
        if not is_ref and res.done and base is not None and base.done:
            mine, theirs = sorted(s for s, _, _ in res.done), sorted(s for s, _, _ in base.done)
            if mine != theirs:
                self.unpaired[res.arm.name] = (mine, theirs)

        def delta(ds: str, m: str) -> str:
            return "ref" if is_ref else _f(_delta(res, base, ds, m), 2, sign=True)

        if ci:
            ci_text = f"[{ci['lo']:+.2f}, {ci['hi']:+.2f}]"
            if ci["arm_runs"] < len(res.done) or ci["base_runs"] < len(base.done):
                ci_text += f" (runs {ci['arm_runs']}/{len(res.done)}, baseline {ci['base_runs']}/{len(base.done)})"
        else:  # the baseline itself, or no finished runs / predictions to resample
            ci_text = "n/a" if res.done and base is not None and base.done and not is_ref else "–"
        cells = [name, seeds, self.cell(res, main, "AP", self.main), delta(main, "AP"), ci_text]
        for m in METRICS[1:]:
            cells += [self.cell(res, main, m, self.main), delta(main, m)]
        for label, ds in self.sets.items():
            if label != self.main:
                cells += [self.cell(res, ds, "AP", label), delta(ds, "AP")]
        p = res.params
        c = res.costs
        wall = _mean([x["wall_s"] for x in c])
        rss = max([x["peak_rss_mb"] for x in c if x["peak_rss_mb"]], default=None)
        gpu = max([x["peak_gpu_mb"] for x in c if x["peak_gpu_mb"]], default=None)
        fusion_m = p.get("fusion_params", 0) / 1e6 if p else None
        cells += [_f(p.get("params", 0) / 1e6 if p else None, 2), _f(fusion_m, 6 if fusion_m and fusion_m < 0.01 else 3),
                  _f(p.get("gflops"), 1), fmt_duration(wall) if wall else "–", _f(_mean([x["img_per_s"] for x in c])),
                  _f(rss / 1024 if rss else None, 2), _f(gpu / 1024 if gpu else None, 2)]
        return cells

    def missing_baseline(self, base_name: str, table: str) -> str:
        msg = (f"!!! WARNING: BASELINE MISSING: {base_name} (the baseline of the same backbone and schedule) has no "
               f"finished run, so the '{table}' table has no Δ and no interval and cannot say whether the arms "
               f"help. Run it: {run_command(self.plan)} !!!")
        self.warnings.append(msg)
        return msg

    def table(self, title: str, arms: list[ArmResult], ref_name: str) -> list[str]:
        base = self.results.get(ref_name)
        lines = [f"## {title}", "", f"Baseline: `{ref_name}` (same backbone and schedule).", ""]
        if base is None or not base.done:
            lines += [f"**{self.missing_baseline(ref_name, title)}**", ""]
        header = self.header()
        lines += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
        if all(a.arm.name != ref_name for a in arms):
            if base is not None and base.done:
                lines.append("| " + " | ".join(self.row(base, base, True)) + " |")
            else:
                lines.append(f"| **{ref_name}** (baseline) | **MISSING** |" + " – |" * (len(header) - 2))
        for res in arms:
            is_ref = res.arm.name == ref_name
            lines.append("| " + " | ".join(self.row(res, base, is_ref)) + " |")
        pending = [a for a in arms if a.arm.pending]
        if pending:
            lines += ["", f"{len(pending)} arm(s) pending: {pending[0].arm.pending}"]
        return lines + [""]


def run_command(plan: Plan) -> str:
    """The ``ablate.py run`` command line that trains this plan's runs (its output, optional
    studies and --opts, when they are not the study file's)."""
    s = plan.study
    args = ["python", "tools/ablate.py", "run", s.path]
    args += ["--output", s.output] if s.output != str(s.raw.get("output", s.output)) else []
    args += ["--with-optional"] if s.include_optional and s.raw.get("include_optional") is not True else []
    return shlex.join(args + (["--opts", *plan.cli_opts] if plan.cli_opts else []))


def _tables(plan: Plan) -> list[tuple[str, list[Arm]]]:
    tables: dict[str, list[Arm]] = {}
    for arm in plan.arms:
        if arm.phase != "sensor":  # reported by cadet_d2.study.sensor
            tables.setdefault(arm.table, []).append(arm)
    return list(tables.items())


def _selection_lines(plan: Plan) -> list[str]:
    return [f"- {n}" for n in plan.notes]


def _csv_rows(rep: Reporter, plan: Plan) -> tuple[list[dict], list[dict]]:
    arms, runs = [], []
    for table, members in _tables(plan):
        for arm in members:
            res = rep.results[arm.name]
            base = rep.results.get(_reference(plan, table, members))
            row = {"table": table, "arm": arm.name, "group": arm.group, "phase": arm.phase, "backbone": arm.backbone,
                   "fusion": arm.fusion, "stages": json.dumps(arm.stages), "options": json.dumps(arm.options),
                   "baseline": base.arm.name if base else "", "pending": arm.pending,
                   "seeds_planned": len(res.seeds), "seeds_done": len(res.done), "seeds_failed": len(res.failed)}
            for label, ds in rep.sets.items():
                for m in METRICS:
                    mean, std = mean_std(res.values(ds, m))
                    row.update({f"{label}_{m}_mean": mean, f"{label}_{m}_std": std,
                                f"{label}_{m}_delta": _delta(res, base, ds, m)})
            ci = rep.interval(res, base) if base else None
            row.update({f"{rep.main}_AP_delta_ci_lo": ci and ci["lo"], f"{rep.main}_AP_delta_ci_hi": ci and ci["hi"],
                        f"{rep.main}_AP_delta_p_gt0": ci and ci["p_gt0"]})
            row.update({k: res.params.get(k) for k in ("params", "fusion_params", "backbone_params", "gflops")})
            row.update({"wall_s_mean": _mean([c["wall_s"] for c in res.costs]),
                        "img_per_s_mean": _mean([c["img_per_s"] for c in res.costs]),
                        "peak_rss_mb": max([c["peak_rss_mb"] or 0 for c in res.costs], default=None) or None,
                        "peak_gpu_mb": max([c["peak_gpu_mb"] or 0 for c in res.costs], default=None) or None,
                        "overrides": " ".join(f"{k} {fmt_value(v)}" for k, v in arm.overrides)})
            arms.append(row)
            for (seed, d, m), c in zip(res.done, res.costs):
                r = {"arm": arm.name, "seed": seed, "state": "done", "dir": d, **c}
                for label, ds in rep.sets.items():
                    r.update({f"{label}_{mm}": m.get(ds, {}).get(mm) for mm in METRICS})
                runs.append(r)
            for seed, d, err in res.failed:
                runs.append({"arm": arm.name, "seed": seed, "state": "failed", "dir": d, "error": err})
    return arms, runs


def machine_lines(results: dict[str, ArmResult], warnings: list[str]) -> list[str]:
    """The header line naming the machines of the finished runs (with run counts); a warning
    appended to ``warnings`` when they are more than one."""
    counts = Counter(c["machine"] or "not recorded" for r in results.values() for c in r.costs)
    if not counts:
        return []
    if len(counts) > 1:
        warnings.append(f"Warning: the finished runs come from {len(counts)} machines (Machines below, runs.csv). "
                        "A Δ between runs of two machines has the machines' difference in it, and train time and "
                        "img/s compare only within one machine.")
    return ["- Machines: " + "; ".join(f"{m} ({n} run{'' if n == 1 else 's'})" for m, n in counts.items()) + "."]


def _reference(plan: Plan, table: str, members: list[Arm]) -> str:
    """The baseline a table is compared with: the members' baseline (for the backbone baselines
    table: the baseline of the study's fusion backbone)."""
    return members[0].baseline


def _write_csv(path: str, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def command_warnings(plan: Plan) -> list[str]:
    """One warning when finished runs were trained with other arguments than ``plan`` gives them
    (another ``--opts``, an edited study file): their numbers are not what the report's header says."""
    differ = []  # (run, recorded args)
    for run in plan.runs:
        command = read_status(run.dir).get("command")
        if run.state() != "done" or not command:
            continue
        recorded = training_args(command)
        if recorded != run.planned_args:
            differ.append((run, recorded))
    if not differ:
        return []
    run, recorded = differ[0]
    return [f"Warning: {len(differ)} finished run(s) were trained with other arguments than this report assumes "
            f"(e.g. {run.key}: {args_diff(recorded, run.planned_args)}). Give `ablate "
            "report` the same study file and --opts as `ablate run`."]


def write_report(study: Study, cli_opts: Optional[list[str]] = None, out_dir: Optional[str] = None,
                 flops: bool = False, resamples: Optional[int] = None, plots: bool = True,
                 echo: Callable[[str], None] = print) -> str:
    """Write the report files; return the path of report.md."""
    plan = make_plan(study, cli_opts)
    out_dir = out_dir or os.path.join(study.output, "report")
    os.makedirs(out_dir, exist_ok=True)
    results = collect(plan, flops, echo)
    n = int(resamples if resamples is not None else study.report["bootstrap"]["resamples"])
    rep = Reporter(plan, results, n, echo)
    rep.warnings += command_warnings(plan)
    states = [r.state() for r in plan.runs]
    lines = [f"# Ablation study report: {study.name}", "",
             f"Study file `{study.path}`, output `{study.output}`, written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             f"- Schedule (every arm and baseline): {plan.schedule_note}; seeds {study.seeds}."
             + (f" Overrides given to every run (`--opts`, applied last): `{' '.join(plan.cli_opts)}`."
                if plan.cli_opts else ""),
             f"- Runs: {states.count('done')}/{len(plan.runs)} done, {states.count('failed')} failed, "
             f"{states.count('pending')} pending (phase 2), "
             f"{len(plan.runs) - states.count('done') - states.count('failed') - states.count('pending')} not run yet.",
             *machine_lines(results, rep.warnings), ""]
    tables = _tables(plan)
    if tables:
        lines[-1:] = ["- Sets: " + ", ".join(f"{k} = `{v}`" for k, v in rep.sets.items()) + ".",
                      f"- Cells: mean ± sample std over the finished seeds (COCO box AP, %; the value alone with one seed: no std). Δ = arm mean − baseline mean. "
                      f"CI: {int(rep.boot.level * 100)}% paired bootstrap interval of Δ{rep.main} AP over the {rep.main} images "
                      f"({n} resamples; in each resample an arm's AP is the mean over its seeds, so seeds are pooled; the "
                      "interval reflects test-set sampling, not training-seed variance).",
                      "- Cost: parameters of the whole detector and of its fusion modules only; GFLOPs at "
                      f"{study.report['flops_size'][0]}x{study.report['flops_size'][1]} (with `--flops`); train time = wall "
                      "time of the training process per seed (start-up and evaluation included); img/s = images per batch × "
                      "iterations / s from Detectron2's training-speed log line (else from the wall time); peak RSS of the "
                      "training process; peak GPU memory from Detectron2's max_mem.", "",
                      *_selection_lines(plan), ""]
    for title, members in tables:
        res = [results[a.name] for a in members]
        lines += rep.table(title, res, _reference(plan, title, members))
    if study.sensor:
        from .sensor import report_lines

        lines += report_lines(plan)
    failed = [(r.arm.name, s, e) for r in results.values() for s, _, e in r.failed]
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{a}/seed{s}`: {e} (see its status.json and stderr.log)"
                                           for a, s, e in failed] + [""]
    if plots and tables:
        from .plots import write_plots

        names = write_plots(rep, plan, out_dir)
        lines += ["## Plots", ""] + [f"![{n}]({n})" for n in names] + [""]
    if rep.gaps:
        rep.warnings.append(f"Warning: {len(rep.gaps)} finished run(s) lack values that their arm's cells use; those "
                            "cells and their Δ are over the seeds that have them, marked (k/n seeds): "
                            + "; ".join(f"{k}: {', '.join(v)}" for k, v in rep.gaps.items()) + ".")
    if rep.unpaired:
        rep.warnings.append("Warning: Δ and interval of " + "; ".join(
            f"{a} compare its finished seeds {m} with the baseline's {b}" for a, (m, b) in rep.unpaired.items())
            + " (a failed or unfinished run on one side): seed-to-seed variation is in those Δ.")
    if rep.warnings:
        lines = lines[:2] + [f"**{w}**" for w in rep.warnings] + [""] + lines[2:]
        for w in rep.warnings:
            echo(w)
    arm_rows, run_rows = _csv_rows(rep, plan)
    _write_csv(os.path.join(out_dir, "results.csv"), arm_rows)
    _write_csv(os.path.join(out_dir, "runs.csv"), run_rows)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    echo(f"report: {path} (+ results.csv, runs.csv{', plots' if plots else ''})")
    return path
