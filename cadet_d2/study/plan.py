"""From a study file to the list of runs: arms x seeds, each with its config overrides.

Arms, in plan order: the backbone baselines (the baseline of every fusion study's and of the
modality ablations' backbone is added when the study file lacks it), each fusion study's phase 1
(one arm per stage set), its phase 2 (grid of options on the top-k phase-1 stage sets; *pending*
until every phase-1 run has finished or failed, unless top_k takes every stage set), then the
modality ablations, then the sensor-failure arms (each detector config of ``sensor_failure``
trained without and with modality dropout, evaluated under the test-time conditions). Fusion
studies marked ``optional`` are left out unless the study includes them (``include_optional:
true`` or ``ablate.py ... --with-optional``).

Every run is ``python -m cadet_d2.engine.train`` (the installed package's training entry point;
a study file's ``train_script`` replaces it by a script).
"""
from __future__ import annotations

import itertools
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .rundir import (FINAL, METRICS_FILE, args_diff, last_checkpoint, read_json, read_metrics, read_status,
                     run_state, training_args)
from .schedule import data_opts, schedule_opts
from .spec import TRAININGS, FusionStudy, Study, StudyError

TRAIN_MODULE = "cadet_d2.engine.train"  # python -m TRAIN_MODULE: tools/train_net.py's command line

ARM_KEYS = ("CADET.BACKBONE.SIZE", "CADET.FUSION.NAME", "CADET.FUSION.STAGES", "CADET.FUSION.DEFAULT",
            "CADET.INPUT.MODALITIES", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD")


@dataclass
class Arm:
    """One configuration of the study (trained once per seed)."""

    name: str
    group: str  # "baseline", a fusion study's name, "modality" or "sensor"
    phase: str  # "baseline", "1", "2", "modality" or "sensor"
    overrides: list[tuple[str, Any]]
    backbone: str
    fusion: str
    stages: Optional[list[int]] = None
    options: dict = field(default_factory=dict)
    baseline: str = ""  # the arm it is compared with
    pending: str = ""  # why it is not concrete yet
    label: str = ""
    config: str = ""  # its config file ('' = the study's base_config)
    training: str = ""  # sensor-failure arms: "nodrop" or "drop"
    detector: str = ""  # sensor-failure arms: the detector's name in ``sensor_failure.arms``

    @property
    def table(self) -> str:
        """The report table it belongs to."""
        return {"baseline": "baselines", "modality": "modality", "sensor": "sensor failure"}.get(
            self.phase, f"{self.group} phase {self.phase}")


@dataclass
class Run:
    """One training: an arm at a seed, in its own folder."""

    arm: Arm
    seed: int
    dir: str
    metrics_file: str = METRICS_FILE
    planned_args: list[str] = field(default_factory=list)  # rundir.training_args of its planned command

    @property
    def key(self) -> str:
        return f"{self.arm.name}/seed{self.seed}"

    def recorded_args(self) -> Optional[list[str]]:
        """:func:`~cadet_d2.study.rundir.training_args` of the command its last attempt ran (None
        when no runner recorded one)."""
        command = read_status(self.dir).get("command")
        return training_args(command) if command else None

    def stale(self) -> bool:
        """Finished, or holding a checkpoint to resume from, but trained with other arguments than
        the plan now gives it (an edited study file, other ``--opts``): reusing it would put another
        configuration's numbers under this arm's name."""
        recorded = self.recorded_args()
        if self.arm.pending or recorded is None or recorded == self.planned_args:
            return False
        return self.state() == "done" or last_checkpoint(self.dir) is not None

    def state(self) -> str:
        """``pending`` (phase 2 not resolved) or :func:`~cadet_d2.study.rundir.run_state`."""
        return "pending" if self.arm.pending else run_state(self.dir, self.metrics_file)

    def metrics(self) -> Optional[dict]:
        return read_metrics(self.dir, self.metrics_file)


@dataclass
class Plan:
    study: Study
    arms: list[Arm]
    runs: list[Run]
    common_opts: list[str]  # every run: study opts, data, schedule
    cli_opts: list[str]  # every run, last
    schedule_note: str
    notes: list[str]
    data_name: str

    @property
    def schedule_ok(self) -> bool:
        """Whether SOLVER.MAX_ITER is known (epochs need the training-set size); a study without
        ``schedule`` (sensor-failure arms only) uses each arm config's own."""
        return not self.study.schedule or self.opt_value("SOLVER.MAX_ITER") is not None

    def opt_value(self, key: str) -> Optional[str]:
        """The last value given for ``key`` on every run's command line (study, schedule, --opts)."""
        opts = self.common_opts + self.cli_opts
        values = [opts[i + 1] for i in range(0, len(opts), 2) if opts[i] == key]
        return values[-1] if values else None

    def arm(self, name: str) -> Optional[Arm]:
        return next((a for a in self.arms if a.name == name), None)

    def arm_opts(self, arm: Arm) -> list[str]:
        """The overrides every run of ``arm`` gets before its seed, output folder and --opts."""
        opts = [*self.common_opts]
        for k, v in arm.overrides:
            opts += [k, fmt_value(v)]
        return opts

    def config_file(self, arm: Arm) -> str:
        """The config file of ``arm``'s runs."""
        return arm.config or self.study.base_config

    def command(self, run: Run, resume: bool = False, eval_only: bool = False) -> list[str]:
        """The argument list of ``run`` after the interpreter: ``-m cadet_d2.engine.train`` (or the
        study's ``train_script``) with tools/train_net.py's arguments. ``eval_only``: evaluate the
        run's ``model_final.pth`` (trained, but its final evaluation is missing)."""
        opts = [*self.arm_opts(run.arm), "SEED", str(run.seed), "OUTPUT_DIR", run.dir, *self.cli_opts]
        if eval_only:
            opts += ["MODEL.WEIGHTS", os.path.join(run.dir, FINAL)]
        flags = ["--eval-only"] if eval_only else ["--resume"] if resume else []
        head = [self.study.train_script] if self.study.train_script else ["-m", TRAIN_MODULE]
        return [*head, "--config-file", self.config_file(run.arm), *flags, *opts]


def check_configs(plan: "Plan", skip: frozenset[str] = frozenset()) -> set[str]:
    """Load (and validate) the config of every concrete arm not in ``skip``, once per arm, before
    anything runs: a typo in a study file's ``options`` or ``opts``, or a fusion module that is
    not registered (after importing ``CADET.FUSION.IMPORTS``), stops here, naming the arm and the
    key, instead of failing every run of the arm. Returns the arms checked."""
    from ..engine.setup import load_config

    checked = set()
    for arm in plan.arms:
        if arm.pending or arm.name in skip:
            continue
        checked.add(arm.name)
        try:
            load_config(plan.config_file(arm), [*plan.arm_opts(arm), *plan.cli_opts])  # with its fusion checks
        except (*CONFIG_ERRORS, FileNotFoundError, ImportError) as e:
            raise config_error(plan.study, f"arm {arm.name}", e) from None
    return checked


CONFIG_ERRORS = (KeyError, ValueError, AssertionError)  # what loading a config with a bad override raises


def config_error(study: Study, where: str, e: Exception) -> StudyError:
    """A config that does not load (a typo in ``opts``/``options``/``--opts``), named as the study's."""
    return StudyError(f"{study.path}: {where}: {e.args[0] if e.args else e}")


def check_fresh(plan: "Plan", runs: Optional[list["Run"]] = None) -> None:
    """Stop before anything runs when runs of the plan (or ``runs``) are :meth:`Run.stale`: ``run``
    would skip them as finished or resume them, silently keeping results of another configuration."""
    stale = [r for r in (plan.runs if runs is None else runs) if r.stale()]
    if not stale:
        return
    r = stale[0]
    raise StudyError(
        f"{plan.study.path}: {len(stale)} run(s) were trained with other arguments than the study file and --opts "
        f"now give (e.g. {r.key}: {args_diff(r.recorded_args(), r.planned_args)}); `run` would reuse them. Give "
        "the study file and --opts they ran with, or move their folders away to train them again: "
        + " ".join(x.dir for x in stale))


def fmt_value(v: Any) -> str:
    """A value as Detectron2's ``merge_from_list`` reads it back (literal_eval, else string)."""
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        v = list(v)
    return repr(v)


def stage_tag(stages: list[int]) -> str:
    return "s" + "".join(str(s) for s in stages)


# Arm names are folder names and SLURM/CLI arguments: no spaces, brackets, quotes or slashes.
ARM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _value_tag(v: Any) -> str:
    """A grid value in an arm name: booleans as 1/0, lists of stages (digits) run together like
    stage tags ([1, 2, 3] -> 123), other lists joined with '-'."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (list, tuple)):
        parts = [_value_tag(x) for x in v]
        return "".join(parts) if all(len(p) == 1 and p.isdigit() for p in parts) else "-".join(parts)
    return str(v)


def fusion_arm_count(fs: FusionStudy) -> int:
    """Arms a fusion study plans: one per stage set, plus its phase-2 grid on each of the top_k."""
    phase2 = fs.top_k * math.prod(len(axis.values) for axis in fs.grid) if fs.grid else 0
    return len(fs.stage_sets) + phase2


def left_out_note(study: Study) -> str:
    """'' or how many arms the optional fusion studies that are not included would add, and how
    to include them."""
    left = study.left_out_studies
    if not left:
        return ""
    n = sum(fusion_arm_count(fs) for fs in left)
    each = ", ".join(f"{fs.name} {fusion_arm_count(fs)}" for fs in left)
    return (f"{n} optional arm(s) left out ({each}): add --with-optional to plan/run/report "
            f"(or include_optional: true in {study.path})")


def arm_name(group: str, stages: list[int], tags: list[tuple[str, Any]] = ()) -> str:
    return "_".join([group, stage_tag(stages), *[f"{t}{_value_tag(v)}" for t, v in tags]])


def baseline_name(fusion: str, size: str) -> str:
    return f"baseline_{fusion}_mit_{size}"


def _baseline_arm(study: Study, size: str) -> Arm:
    name = baseline_name(study.baseline_fusion, size)
    ref = baseline_name(study.baseline_fusion, study.backbone)
    return Arm(name, "baseline", "baseline", [
        ("CADET.BACKBONE.SIZE", size), ("CADET.FUSION.NAME", study.baseline_fusion),
        ("CADET.FUSION.STAGES", [1, 2, 3, 4]), ("CADET.FUSION.DEFAULT", study.baseline_fusion)],
        size, study.baseline_fusion, [1, 2, 3, 4], {}, ref, label=f"{study.baseline_fusion} mit_{size}")


def _fusion_arm(fs: FusionStudy, phase: str, stages: Optional[list[int]], tags: list[tuple[Any, Any]],
                base_fusion: str, pending: str = "", placeholder: str = "") -> Arm:
    options = dict(fs.options)
    options.update({axis.key: v for axis, v in tags})
    short = [(axis.tag, v) for axis, v in tags]
    name = arm_name(fs.name, stages, short) if stages else "_".join([fs.name, placeholder, *[f"{t}{_value_tag(v)}" for t, v in short]])
    overrides = [("CADET.BACKBONE.SIZE", fs.backbone), ("CADET.FUSION.NAME", fs.fusion),
                 ("CADET.FUSION.STAGES", stages if stages else f"<{placeholder}>"), ("CADET.FUSION.DEFAULT", fs.default),
                 *options.items()]
    label = f"{list(stages) if stages else placeholder}" + "".join(f" {t}={_value_tag(v)}" for t, v in short)
    return Arm(name, fs.name, phase, overrides, fs.backbone, fs.fusion, stages, options,
               baseline_name(base_fusion, fs.backbone), pending, label)



def _modality_arm(study: Study, mods: list[str]) -> Arm:
    mean = [x for m in mods for x in study.pixel_stats[m]["mean"]]
    std = [x for m in mods for x in study.pixel_stats[m]["std"]]
    size = study.modality_backbone
    overrides = [("CADET.BACKBONE.SIZE", size), ("CADET.INPUT.MODALITIES", list(mods)),
                 ("MODEL.PIXEL_MEAN", [float(x) for x in mean]), ("MODEL.PIXEL_STD", [float(x) for x in std]),
                 ("CADET.FUSION.NAME", study.modality_fusion), ("CADET.FUSION.STAGES", [1, 2, 3, 4]),
                 ("CADET.FUSION.DEFAULT", study.modality_fusion)]
    return Arm("modality_" + "_".join(mods), "modality", "modality", overrides, size, study.modality_fusion,
               [1, 2, 3, 4], {}, baseline_name(study.baseline_fusion, size), label="+".join(mods))


def _sensor_arms(study: Study) -> list[Arm]:
    """``<detector>_nodrop`` and ``<detector>_drop`` per detector of ``sensor_failure``."""
    sf = study.sensor
    arms = []
    for det, cfg in sf.arms.items():
        for training in TRAININGS:
            opts = (sf.dropout if training == "drop" else []) + sf.eval
            ref = f"{sf.baseline}_{training}" if sf.baseline else ""
            arms.append(Arm(f"{det}_{training}", "sensor", "sensor", list(zip(opts[0::2], opts[1::2])), "", "",
                            baseline=ref, label=f"{det} {training}", config=cfg, training=training, detector=det))
    return arms


def run_dir(study: Study, arm: str, seed: int) -> str:
    return os.path.join(study.output, arm, f"seed{seed}")


def selection_path(study: Study, group: str) -> str:
    return os.path.join(study.output, f"selection_{group}.json")


def rank_phase1(study: Study, fs: FusionStudy, data_name: str,
                metrics_file: str = METRICS_FILE) -> tuple[Optional[list[dict]], str]:
    """Phase-1 stage sets ranked by the mean over seeds of ``report.rank_by`` (best first), or
    (None, why) while a phase-1 run is neither finished nor failed."""
    rank = study.report["rank_by"]
    dataset = f"{data_name}_{rank['set']}"
    rows, waiting = [], 0
    for stages in fs.stage_sets:
        name = arm_name(fs.name, stages)
        values = []
        for seed in study.seeds:
            d = run_dir(study, name, seed)
            state = run_state(d, metrics_file)
            if state == "done":
                v = (read_metrics(d, metrics_file) or {}).get(dataset, {}).get(rank["metric"])
                values.append(float("nan") if v is None else float(v))
            elif state != "failed":
                waiting += 1
        ok = [v for v in values if not math.isnan(v)]
        rows.append({"stages": stages, "arm": name, "score": sum(ok) / len(ok) if ok else None, "seeds": len(values)})
    n = len(fs.stage_sets) * len(study.seeds)
    if waiting:
        return None, f"pending: needs phase-1 results ({n - waiting}/{n} {fs.name} phase-1 runs finished or failed)"
    rows.sort(key=lambda r: -math.inf if r["score"] is None else r["score"], reverse=True)  # stable: ties keep order
    if sum(r["seeds"] > 0 for r in rows) < fs.top_k:
        return None, f"blocked: fewer than top_k={fs.top_k} {fs.name} phase-1 arms have results (rerun failed ones)"
    return rows, ""


def select_top_k(study: Study, fs: FusionStudy, data_name: str, freeze: bool,
                 metrics_file: str = METRICS_FILE) -> tuple[Optional[list[list[int]]], str]:
    """Phase-2 stage sets: a frozen selection (``selection_<group>.json``) if present, else the
    top-k of :func:`rank_phase1`, frozen to that file when ``freeze`` (``ablate run`` does)."""
    if fs.top_k >= len(fs.stage_sets):  # every stage set: nothing to choose, no need to wait
        return [list(s) for s in fs.stage_sets], (f"{fs.name} phase 2 on every phase-1 stage set {fs.stage_sets} "
                                                  f"(top_k {fs.top_k}: no ranking needed)")
    path = selection_path(study, fs.name)
    frozen = read_json(path)
    if isinstance(frozen, dict) and frozen.get("top_k") == fs.top_k and \
            all(s in fs.stage_sets for s in frozen.get("stage_sets", [])):
        return frozen["stage_sets"], f"{fs.name} phase 2 on {frozen['stage_sets']} (selection frozen in {path})"
    ranking, why = rank_phase1(study, fs, data_name, metrics_file)
    if ranking is None:
        return None, why
    top = [r["stages"] for r in ranking[:fs.top_k]]
    rank = study.report["rank_by"]
    if freeze:
        from ..utils.io import atomic_write_json

        atomic_write_json(path, {"group": fs.name, "top_k": fs.top_k, "stage_sets": top, "ranking": ranking,
                                 "rank_by": rank, "made": time.strftime("%Y-%m-%d %H:%M:%S")})
    return top, f"{fs.name} phase 2 on {top}: top {fs.top_k} by mean {rank['set']} {rank['metric']} over seeds"


def study_arms(study: Study, data_name: str = "", freeze: bool = False,
               metrics_file: str = METRICS_FILE) -> tuple[list[Arm], list[str]]:
    """Every arm of the study (phase 2 resolved when possible) and notes for the plan. Optional
    fusion studies count only when the study includes them (:attr:`Study.planned_studies`)."""
    notes = []
    sizes = list(study.baseline_sizes)
    studies = study.planned_studies
    needed = [fs.backbone for fs in studies] + ([study.modality_backbone] if study.modality_sets else [])
    for size in needed:
        if size not in sizes:
            sizes.append(size)
            notes.append(f"added {baseline_name(study.baseline_fusion, size)}: the fusion arms on mit_{size} "
                         "are compared with it (same backbone and schedule)")
    arms = [_baseline_arm(study, s) for s in sizes]
    for fs in studies:
        arms += [_fusion_arm(fs, "1", s, [], study.baseline_fusion) for s in fs.stage_sets]
        if not fs.grid:
            continue
        combos = list(itertools.product(*[[(axis, v) for v in axis.values] for axis in fs.grid]))
        top, why = select_top_k(study, fs, data_name, freeze, metrics_file)
        notes.append(why)
        if top is None:
            arms += [_fusion_arm(fs, "2", None, list(c), study.baseline_fusion, why, f"top{i + 1}")
                     for i in range(fs.top_k) for c in combos]
        else:
            arms += [_fusion_arm(fs, "2", s, list(c), study.baseline_fusion) for s in top for c in combos]
    arms += [_modality_arm(study, m) for m in study.modality_sets]
    arms += _sensor_arms(study) if study.sensor else []
    names = [a.name for a in arms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StudyError(f"{study.path}: two arms share a name: {dup}")
    bad = [n for n in names if not ARM_NAME_RE.fullmatch(n)]
    if bad:
        raise StudyError(f"{study.path}: arm name(s) {bad} are not usable as folder names (letters, digits, "
                         "'_', '.', '+', '-'): change the study name, phase2.grid tag or value")
    if note := left_out_note(study):
        notes.append(note)
    return arms, notes


def _check_conflicts(study: Study, arms: list[Arm], cli_opts: list[str]) -> None:
    varied = {k for a in arms for k, _ in a.overrides}
    for where, opts in (("opts", study.opts), ("--opts", cli_opts)):
        keys = opts[0::2]
        bad = sorted(set(keys) & (varied | {"SEED", "OUTPUT_DIR"}))
        if bad:
            raise StudyError(f"{study.path}: {where} sets {bad}, which the study sets per arm/run; "
                             "change the study file's arms instead")


def make_plan(study: Study, cli_opts: Optional[list[str]] = None, freeze: bool = False) -> Plan:
    """The full plan. ``cli_opts`` (KEY VALUE ...) go last on every run's command line."""
    cli_opts = list(cli_opts or [])
    if len(cli_opts) % 2:
        raise StudyError("--opts must be KEY VALUE pairs")
    from ..engine.setup import load_config

    base_opts = [*study.opts, *data_opts(study)]
    cfg_cache = {}

    def cfg_loader():
        if "cfg" not in cfg_cache:
            try:
                cfg_cache["cfg"] = load_config(study.base_config, [*base_opts, *cli_opts])
            except CONFIG_ERRORS as e:  # before any arm: the study's opts, data or --opts
                raise config_error(study, "opts, data or --opts", e) from None
        return cfg_cache["cfg"]

    sched, note = schedule_opts(study, cfg_loader)
    if "SOLVER.MAX_ITER" in cli_opts[0::2]:
        note += f" (MAX_ITER {cli_opts[cli_opts.index('SOLVER.MAX_ITER') + 1]} from --opts)"
    data_name = str(cfg_loader().CADET.DATA.NAME)
    metrics_file = str(cfg_loader().CADET.TEST.METRICS_FILE)
    arms, notes = study_arms(study, data_name, freeze, metrics_file)
    _check_conflicts(study, arms, cli_opts)
    runs = [Run(a, s, run_dir(study, a.name, s), metrics_file) for a in arms for s in study.seeds]
    plan = Plan(study, arms, runs, [*base_opts, *sched], cli_opts, note, notes, data_name)
    for run in runs:
        run.planned_args = training_args(["python", *plan.command(run)])
    return plan
