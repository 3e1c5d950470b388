"""``tools/ablate.py``: plan, run and report an ablation study (see docs/study.md).

    python tools/ablate.py plan   configs/studies/cadet48.yaml [--with-optional]
    python tools/ablate.py run    configs/studies/cadet48.yaml [--dry-run] [--slurm [--submit]] [--with-optional]
    python tools/ablate.py report configs/studies/cadet48.yaml [--flops] [--resamples 1000] [--with-optional]

Every subcommand takes ``--output DIR`` (the study's output root), ``--with-optional`` (also the
fusion studies marked ``optional: true``, as the study file's ``include_optional: true`` does) and,
last, ``--opts KEY VALUE ...`` (config overrides appended to every run, e.g. ``--opts
CADET.DATA.ROOT /data MODEL.DEVICE cpu``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Optional

from ..engine.signals import EXIT_STOPPED
from .plan import Plan, check_configs, check_fresh, fmt_value, left_out_note, make_plan
from .spec import Study, StudyError, load_study


def _load(args: argparse.Namespace) -> Study:
    study = load_study(args.study)
    if args.output:
        study = dataclasses.replace(study, output=args.output)
    if args.with_optional:
        study = dataclasses.replace(study, include_optional=True)
    return study


def format_plan(plan: Plan) -> str:
    """Every run (phase, arm/seed, state, overrides) and the counts."""
    s = plan.study
    lines = [f"study {s.name} ({s.path}) -> {s.output}", f"base config: {s.base_config}",
             f"every run: {' '.join(plan.common_opts + plan.cli_opts)}", f"schedule: {plan.schedule_note}",
             f"seeds: {s.seeds}"] + [f"note: {n}" for n in plan.notes] + [""]
    lines.append(f"{'phase':9} {'run':44} {'state':8} overrides")
    states = []
    for r in plan.runs:
        state = "stale" if r.stale() else r.state()
        states.append(state)
        over = " ".join(f"{k} {fmt_value(v)}" for k, v in r.arm.overrides)
        lines.append(f"{r.arm.phase:9} {r.key:44} {state:8} {over} SEED {r.seed}")
    studies = s.planned_studies
    groups = [fs.name for fs in studies]
    n = {g: sum(a.group == g for a in plan.arms) for g in ["baseline", *groups, "modality", "sensor"]}
    study_arms = n["baseline"] + sum(n[g] for g in groups)
    parts = " + ".join([f"{n['baseline']} baselines"] +
                       [f"{n[fs.name]} {fs.name}" + (" (optional)" if fs.optional else "") for fs in studies])
    sensor = f" + {n['sensor']} sensor failure ({len(s.sensor.arms)} detectors x nodrop/drop)" if s.sensor else ""
    lines += ["", f"arms: {study_arms} study arms ({parts}) + {n['modality']} modality{sensor} = {len(plan.arms)} arms "
              f"x {len(s.seeds)} seeds = {len(plan.runs)} runs",
              f"runs: {states.count('done')} done, {states.count('failed')} failed, "
              f"{states.count('pending')} pending (phase 2, needs phase-1 results), "
              f"{len(states) - sum(map(states.count, ('done', 'failed', 'pending', 'stale')))} to run"
              + (f", {states.count('stale')} stale (trained with other arguments than the study file and --opts "
                 "now give: `run` stops on them)" if 'stale' in states else "")]
    if note := left_out_note(s):
        lines.append(note)
    return "\n".join(lines)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML (e.g. configs/studies/cadet48.yaml)")
    p.add_argument("--output", default="", help="output root (default: the study file's 'output')")
    p.add_argument("--with-optional", action="store_true",
                   help="also plan/run/report the fusion studies marked 'optional: true' "
                        "(as the study file's 'include_optional: true' does)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE ... appended to every run's config (must come last)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ablate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="list every run, its overrides and state")
    _common(p)
    p = sub.add_parser("run", help="train the unfinished runs here (or write/submit a SLURM array)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, train nothing")
    p.add_argument("--slurm", action="store_true", help="write a SLURM job array for the unfinished runs")
    p.add_argument("--submit", action="store_true", help="with --slurm: submit the array and its follow-up job (sbatch)")
    p.add_argument("--new-only", action="store_true",
                   help="with --slurm: only runs never attempted, or killed after a new checkpoint (the follow-up job's)")
    p.add_argument("--no-retry-failed", action="store_true", help="skip runs whose last attempt failed")
    _common(p)
    p = sub.add_parser("run-one", help="train one run (what each SLURM task does)")
    p.add_argument("--arm", required=True)
    p.add_argument("--seed", type=int, required=True)
    _common(p)
    p = sub.add_parser("report", help="write report.md, results.csv, runs.csv and plots")
    p.add_argument("--flops", action="store_true", help="also count GFLOPs (slow: traces each arm's model)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: the study file's)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--report-dir", default="", help="where to write (default: <output>/report)")
    _common(p)
    return parser


def _run_one(study: Study, args: argparse.Namespace) -> int:
    from .run import execute, run_lock

    plan = make_plan(study, args.opts, freeze=True)
    run = next((r for r in plan.runs if r.arm.name == args.arm and r.seed == args.seed), None)
    if run is None and study.left_out_studies:
        # An arm of an optional study, named explicitly (SLURM's tasks.txt lines carry no --with-optional).
        plan = make_plan(dataclasses.replace(study, include_optional=True), args.opts, freeze=True)
        run = next((r for r in plan.runs if r.arm.name == args.arm and r.seed == args.seed), None)
    if run is None:
        print(f"no run {args.arm}/seed{args.seed} in the plan (phase 2 not resolved yet?)", file=sys.stderr)
        return 2
    check_fresh(plan, [run])
    if run.state() == "done":
        print(f"{run.key}: already done")
        return 0
    with run_lock(run.dir) as mine:
        if not mine:
            print(f"{run.key}: running in another process")
            return 0
        status = execute(plan, run)
    print(f"{run.key}: {status['state']}" + (f" ({status['error']})" if status.get("error") else ""))
    return 0 if status["state"] == "done" else 1


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        study = _load(args)
        if args.cmd == "plan":
            plan = make_plan(study, args.opts)
            print(format_plan(plan))
            check_configs(plan)
            return 0
        if args.cmd == "run-one":
            return _run_one(study, args)
        if args.cmd == "run":
            if (args.submit or args.new_only) and not args.slurm:  # else they would train here, unasked
                raise StudyError(f"{'--submit' if args.submit else '--new-only'} needs --slurm "
                                 f"(ablate.py run {args.study} --slurm --submit)")
            if args.slurm:
                from .slurm import SlurmError, submit, write_slurm

                check_fresh(make_plan(study, args.opts))
                plan = make_plan(study, args.opts, freeze=True)
                check_configs(plan)
                check_fresh(plan)
                folder = write_slurm(plan, args.output or None, args.opts, args.new_only)
                if folder is None:
                    print("nothing to submit: every concrete run is finished (or, with --new-only, attempted)")
                    return 0
                print(f"SLURM scripts in {folder}: submit with `bash {folder}/submit.sh` (array + follow-up job that "
                      "submits phase 2 when phase 1 is done)")
                if args.submit:
                    try:
                        if not submit(plan, folder):
                            return 1  # asked to submit, and there is no sbatch here
                    except SlurmError as e:
                        print(f"slurm error: {e}", file=sys.stderr)
                        return 2
                return 0
            from .run import run_study

            summary = run_study(study, args.opts, dry_run=args.dry_run, retry_failed=not args.no_retry_failed)
            if summary["interrupted"]:
                return EXIT_STOPPED  # stopped on purpose, resumable: as the training itself exits
            return 1 if summary["failed"] else 0
        if args.cmd == "report":
            from .report import write_report

            write_report(study, args.opts, args.report_dir or None, flops=args.flops, resamples=args.resamples,
                         plots=not args.no_plots)
            return 0
    except (StudyError, OSError) as e:
        print(f"study error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the run in progress is recorded as interrupted (run.execute)
        print("interrupted (Ctrl-C): run the same command again to resume", file=sys.stderr)
        return 130
    return 2
