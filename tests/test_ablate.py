"""tools/ablate.py: the cadet48 plan, the exact bootstrap, and a tiny study end to end (run, kill,
resume, phase 2, failures, report, missing baseline)."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from conftest import make_tiny_root

from cadet_d2.study import StudyError, load_study, make_plan
from cadet_d2.study.bootstrap import per_image_eval, resample_weights, resampled_ap
from cadet_d2.study.cli import format_plan
from cadet_d2.study.rundir import last_checkpoint, read_status
from cadet_d2.utils.machine import machine_label

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = "eval_metrics.json"  # CADET.TEST.METRICS_FILE (checked in test_cadet48_plan)
CADET48 = os.path.join(REPO, "configs", "studies", "cadet48.yaml")
SYNTH_SMALL = os.path.join(REPO, "configs", "studies", "synth_small.yaml")


def _study(path: str, output: str):
    return dataclasses.replace(load_study(path), output=output)


def _over(arm) -> dict:
    return dict(arm.overrides)


def _fake_finished(run_dir: str, test_ap: float) -> None:
    """A finished run as far as the planner can tell: model_final.pth, then the metrics file."""
    os.makedirs(run_dir, exist_ok=True)
    open(os.path.join(run_dir, "model_final.pth"), "wb").close()
    with open(os.path.join(run_dir, METRICS), "w") as f:
        json.dump({"datasets": {"synth_test": {"AP": test_ap}}, "weights": ""}, f)


# ---- every study file: each planned run is a valid config ---------------------------------------
FUSION_STUDY_FILES = sorted(os.path.join("configs", "studies", f) for f in os.listdir(os.path.join(REPO, "configs", "studies"))
                            if f.endswith(".yaml") and f != "sensor_failure.yaml")  # that one: test_sensor_failure


@pytest.mark.parametrize("path", FUSION_STUDY_FILES)
def test_every_planned_run_loads_as_a_config(path, tmp_path, monkeypatch):
    """Optional arms included: each concrete run's command line (base config, study opts, arm
    overrides, seed) loads and validates, and says the arm's fusion module and seed."""
    from cadet_d2.engine.setup import load_config

    monkeypatch.chdir(REPO)  # study files name their configs relative to the repository
    study = dataclasses.replace(_study(path, str(tmp_path / "out")), include_optional=True)
    plan = make_plan(study, ["CADET.DATA.ROOT", make_tiny_root(str(tmp_path / "data"))])
    runs = [r for r in plan.runs if not r.arm.pending]
    assert runs and any(r.arm.group != "baseline" for r in runs)
    for run in runs:
        argv = plan.command(run)
        assert argv[:3] == ["-m", "cadet_d2.engine.train", "--config-file"]
        cfg = load_config(argv[3], argv[4:])
        assert cfg.CADET.FUSION.NAME == run.arm.fusion and cfg.SEED == run.seed, run.key
        assert cfg.OUTPUT_DIR == run.dir and cfg.CADET.BACKBONE.SIZE == run.arm.backbone, run.key


def test_a_typo_in_a_study_file_stops_before_any_run(tmp_path, capsys):
    from cadet_d2.study.cli import main

    raw = yaml.safe_load(open(SYNTH_SMALL))
    raw["fusion_studies"][1]["options"] = {"CADET.FUSION.GAFF.SE_REDUCTON": 4}
    raw["output"] = str(tmp_path / "out")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw))
    for cmd in (["plan"], ["run"], ["run", "--slurm"]):
        assert main([*cmd, str(path), "--opts", "CADET.DATA.ROOT", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "arm gaff_s4" in err and "SE_REDUCTON" in err and "did you mean CADET.FUSION.GAFF.SE_REDUCTION" in err
    assert not os.path.exists(tmp_path / "out" / "baseline_frm_ffm_mit_b0")  # nothing ran


# ---- (a) the cadet48 plan -----------------------------------------------------------------------
def test_cadet48_plan(tmp_path):
    root = make_tiny_root(str(tmp_path / "data"))
    study = _study(CADET48, str(tmp_path / "out"))
    plan = make_plan(study, ["CADET.DATA.ROOT", root])
    assert plan.runs[0].metrics_file == METRICS
    groups = [a.group for a in plan.arms]
    assert (groups.count("baseline"), groups.count("cssa"), groups.count("gaff"), groups.count("modality")) == (5, 11, 32, 7)
    assert len(plan.runs) == 55 * 3 and {r.seed for r in plan.runs} == {0, 1, 2}
    text = format_plan(plan)
    assert "48 study arms (5 baselines + 11 cssa + 32 gaff) + 7 modality = 55 arms x 3 seeds = 165 runs" in text
    assert "84 pending" in text  # (4 cssa + 24 gaff) phase-2 arms x 3 seeds
    pending = [a for a in plan.arms if a.pending]
    assert len(pending) == 28 and all(a.phase == "2" for a in pending)

    # 15 epochs x 8 training images / batch 16 -> 8 iterations
    assert plan.opt_value("SOLVER.MAX_ITER") == str(math.ceil(15 * 8 / 16))
    assert plan.opt_value("SOLVER.IMS_PER_BATCH") == "16" and plan.opt_value("SOLVER.BASE_LR") == "0.02"

    base = plan.arm("baseline_frm_ffm_mit_b1")
    assert _over(base) == {"CADET.BACKBONE.SIZE": "b1", "CADET.FUSION.NAME": "frm_ffm",
                           "CADET.FUSION.STAGES": [1, 2, 3, 4], "CADET.FUSION.DEFAULT": "frm_ffm"}
    assert [a.name for a in plan.arms if a.group == "baseline"] == [f"baseline_frm_ffm_mit_{s}" for s in
                                                                    ("b0", "b1", "b2", "b4", "b5")]
    cssa23 = _over(plan.arm("cssa_s23"))
    assert (cssa23["CADET.FUSION.NAME"], cssa23["CADET.FUSION.STAGES"], cssa23["CADET.FUSION.CSSA.THRESHOLD"],
            cssa23["CADET.BACKBONE.SIZE"], cssa23["CADET.FUSION.DEFAULT"]) == ("cssa", [2, 3], 0.5, "b1", "frm_ffm")
    assert plan.arm("cssa_s23").baseline == "baseline_frm_ffm_mit_b1"
    g234 = _over(plan.arm("gaff_s234"))
    assert (g234["CADET.FUSION.STAGES"], g234["CADET.FUSION.GAFF.SE_REDUCTION"], g234["CADET.FUSION.GAFF.INTER_SHARED"],
            g234["CADET.FUSION.GAFF.MERGE_BOTTLENECK"]) == ([2, 3, 4], 4, False, False)
    te = _over(plan.arm("modality_thermal_event"))
    assert te["CADET.INPUT.MODALITIES"] == ["thermal", "event"]
    assert (te["MODEL.PIXEL_MEAN"], te["MODEL.PIXEL_STD"]) == ([92.0, 3.0], [46.0, 24.0])
    rgb = _over(plan.arm("modality_rgb"))
    assert (rgb["MODEL.PIXEL_MEAN"], rgb["MODEL.PIXEL_STD"]) == ([74.0, 76.0, 75.0], [65.0, 66.0, 68.0])
    run = next(r for r in plan.runs if r.arm.name == "cssa_s23" and r.seed == 1)
    cmd = plan.command(run)
    assert cmd[cmd.index("SEED") + 1] == "1" and cmd[cmd.index("OUTPUT_DIR") + 1] == os.path.join(study.output, "cssa_s23", "seed1")
    assert cmd[cmd.index("CADET.FUSION.STAGES") + 1] == "[2, 3]" and cmd[-2:] == ["CADET.DATA.ROOT", root]

    # Fabricated phase-1 results: the ranking is by the mean over seeds (seed 0 alone would differ).
    cssa_ap = {(1,): [20, 20, 20], (2,): [50, 0, 0], (3,): [1, 1, 1], (4,): [2, 2, 2], (2, 3): [3, 3, 3],
               (3, 4): [30, 30, 30], (1, 2, 3, 4): [4, 4, 4]}
    gaff_ap = {(1,): 1, (2,): 7, (3,): 2, (4,): 8, (2, 3): 3, (3, 4): 4, (2, 3, 4): 9, (1, 2, 3, 4): 5}
    for stages, aps in cssa_ap.items():
        for seed, ap in enumerate(aps):
            _fake_finished(os.path.join(study.output, "cssa_s" + "".join(map(str, stages)), f"seed{seed}"), ap)
    for stages, ap in gaff_ap.items():
        for seed in range(3):
            d = os.path.join(study.output, "gaff_s" + "".join(map(str, stages)), f"seed{seed}")
            if stages == (1,) and seed == 2:  # a failed phase-1 run does not block phase 2
                os.makedirs(d)
                with open(os.path.join(d, "status.json"), "w") as f:
                    json.dump({"state": "failed", "error": "exit code 1"}, f)
            elif not (stages == (3,) and seed == 1):
                _fake_finished(d, ap)
    plan = make_plan(study, ["CADET.DATA.ROOT", root])
    assert sum(a.group == "cssa" and a.pending == "" for a in plan.arms) == 11  # cssa resolved
    assert sum(a.group == "gaff" and bool(a.pending) for a in plan.arms) == 24  # gaff_s3/seed1 not run yet
    assert "pending: needs phase-1 results (23/24 gaff" in " ".join(plan.notes)
    _fake_finished(os.path.join(study.output, "gaff_s3", "seed1"), 2)
    plan = make_plan(study, ["CADET.DATA.ROOT", root])
    assert not any(a.pending for a in plan.arms) and len(plan.arms) == 55
    assert [a.name for a in plan.arms if a.group == "cssa" and a.phase == "2"] == [
        "cssa_s34_t0.3", "cssa_s34_t0.7", "cssa_s1_t0.3", "cssa_s1_t0.7"]
    assert _over(plan.arm("cssa_s1_t0.7"))["CADET.FUSION.CSSA.THRESHOLD"] == 0.7
    gaff2 = [a for a in plan.arms if a.group == "gaff" and a.phase == "2"]
    assert len(gaff2) == 24 and {tuple(a.stages) for a in gaff2} == {(2, 3, 4), (4,), (2,)}
    g = _over(plan.arm("gaff_s234_r8_shared1_bneck0"))
    assert (g["CADET.FUSION.STAGES"], g["CADET.FUSION.GAFF.SE_REDUCTION"], g["CADET.FUSION.GAFF.INTER_SHARED"],
            g["CADET.FUSION.GAFF.MERGE_BOTTLENECK"], g["CADET.BACKBONE.SIZE"]) == ([2, 3, 4], 8, True, False, "b1")
    assert "48 study arms (5 baselines + 11 cssa + 32 gaff) + 7 modality" in format_plan(plan)

    # every arm's overrides make a valid config
    from cadet_d2.engine import load_config
    from cadet_d2.study.plan import fmt_value

    for arm in plan.arms:
        opts = [x for k, v in arm.overrides for x in (k, fmt_value(v))]
        cfg = load_config(os.path.join(REPO, study.base_config), [*plan.common_opts, *opts, *plan.cli_opts])
        assert cfg.CADET.BACKBONE.SIZE == arm.backbone


def test_plan_adds_the_baseline_and_refuses_conflicting_opts(tmp_path):
    raw = yaml.safe_load(open(CADET48))
    raw["baselines"]["sizes"] = ["b0", "b2"]  # no b1: the fusion arms would have no baseline
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = _study(str(path), str(tmp_path / "out"))
    plan = make_plan(study, ["CADET.DATA.ROOT", make_tiny_root(str(tmp_path / "data"))])
    assert plan.arm("baseline_frm_ffm_mit_b1") is not None
    assert any("added baseline_frm_ffm_mit_b1" in n for n in plan.notes)
    with pytest.raises(StudyError, match="CADET.BACKBONE.SIZE"):
        make_plan(study, ["CADET.BACKBONE.SIZE", "b0"])  # would silently make every arm b0
    raw["fusion_studies"][0]["options"]["SOLVER.MAX_ITER"] = 10
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(StudyError, match="may not vary per arm"):
        load_study(str(path))


# ---- optional fusion studies --------------------------------------------------------------------
OPTIONAL = {"cssa_learnable": ["cssa_learnable_s23", "cssa_learnable_s34", "cssa_learnable_s1234"],
            "cssa_soft": ["cssa_soft_s23", "cssa_soft_s34", "cssa_soft_s1234"],
            "hybrid": ["hybrid_s1234", "hybrid_s1234_e1", "hybrid_s1234_e123"],
            "cssa_no_eca": ["cssa_no_eca_s1234"], "cssa_no_switch": ["cssa_no_switch_s1234"],
            "cssa_no_spatial": ["cssa_no_spatial_s1234"]}


def _fusion_study(raw: dict, name: str) -> dict:
    return next(fs for fs in raw["fusion_studies"] if fs["name"] == name)


def test_optional_studies_left_out_unless_included(tmp_path, capsys):
    from cadet_d2.engine import load_config
    from cadet_d2.study.cli import main
    from cadet_d2.study.plan import fmt_value

    root = make_tiny_root(str(tmp_path / "data"))
    study = _study(CADET48, str(tmp_path / "out"))
    assert [fs.name for fs in study.fusion_studies if fs.optional] == list(OPTIONAL)
    plan = make_plan(study, ["CADET.DATA.ROOT", root])
    assert len(plan.arms) == 55 and not {a.group for a in plan.arms} & set(OPTIONAL)
    text = format_plan(plan)
    assert "48 study arms (5 baselines + 11 cssa + 32 gaff) + 7 modality = 55 arms" in text
    assert ("12 optional arm(s) left out (cssa_learnable 3, cssa_soft 3, hybrid 3, cssa_no_eca 1, cssa_no_switch 1, "
            "cssa_no_spatial 1): add --with-optional") in text

    plan = make_plan(dataclasses.replace(study, include_optional=True), ["CADET.DATA.ROOT", root])
    assert len(plan.arms) == 67 and "left out" not in format_plan(plan)
    for group, names in OPTIONAL.items():
        assert [a.name for a in plan.arms if a.group == group] == names
        assert all(plan.arm(n).baseline == "baseline_frm_ffm_mit_b1" for n in names)
    assert [a.name for a in plan.arms][:5] == [f"baseline_frm_ffm_mit_{s}" for s in ("b0", "b1", "b2", "b4", "b5")]
    learn = _over(plan.arm("cssa_learnable_s34"))
    assert (learn["CADET.FUSION.NAME"], learn["CADET.FUSION.STAGES"], learn["CADET.FUSION.DEFAULT"],
            learn["CADET.FUSION.CSSA.THRESHOLD"], learn["CADET.FUSION.CSSA.TEMPERATURE"],
            learn["CADET.BACKBONE.SIZE"]) == ("cssa_learnable", [3, 4], "frm_ffm", 0.5, 0.05, "b1")
    soft = _over(plan.arm("cssa_soft_s1234"))
    assert (soft["CADET.FUSION.NAME"], soft["CADET.FUSION.STAGES"]) == ("cssa_soft", [1, 2, 3, 4])
    # hybrid: phase 2 on its only stage set is planned at once (nothing to rank), list values in names
    assert not any(a.pending for a in plan.arms if a.group == "hybrid")
    assert [plan.arm(n).phase for n in OPTIONAL["hybrid"]] == ["1", "2", "2"]
    early = {n: _over(plan.arm(n))["CADET.FUSION.HYBRID.EARLY_STAGES"] for n in OPTIONAL["hybrid"]}
    assert early == {"hybrid_s1234": [1, 2], "hybrid_s1234_e1": [1], "hybrid_s1234_e123": [1, 2, 3]}
    assert _over(plan.arm("hybrid_s1234"))["CADET.FUSION.NAME"] == "hybrid"
    parts = {n: _over(plan.arm(f"{n}_s1234")) for n in ("cssa_no_eca", "cssa_no_switch", "cssa_no_spatial")}
    assert {n: (o["CADET.FUSION.NAME"], o.get("CADET.FUSION.CSSA.ECA"), o.get("CADET.FUSION.CSSA.SWITCH"),
                o.get("CADET.FUSION.CSSA.SPATIAL")) for n, o in parts.items()} == {
        "cssa_no_eca": ("cssa", False, None, None), "cssa_no_switch": ("cssa", None, False, None),
        "cssa_no_spatial": ("cssa", None, None, False)}
    for name in ("cssa_no_switch_s1234", "cssa_learnable_s23", "cssa_soft_s23", "hybrid_s1234_e123"):  # valid configs
        arm = plan.arm(name)
        opts = [x for k, v in arm.overrides for x in (k, fmt_value(v))]
        cfg = load_config(os.path.join(REPO, study.base_config), [*plan.common_opts, *opts, *plan.cli_opts])
        assert cfg.CADET.FUSION.NAME == arm.fusion and list(cfg.CADET.FUSION.STAGES) == arm.stages
    assert list(cfg.CADET.FUSION.HYBRID.EARLY_STAGES) == [1, 2, 3] and cfg.CADET.FUSION.CSSA.TEMPERATURE == 0.05

    # the CLI flag, and the study file's include_optional, do the same
    out = ["--output", str(tmp_path / "out"), "--opts", "CADET.DATA.ROOT", root]
    assert main(["plan", CADET48, "--with-optional", *out]) == 0
    text = capsys.readouterr().out
    assert ("60 study arms (5 baselines + 11 cssa + 32 gaff + 3 cssa_learnable (optional) + 3 cssa_soft (optional) "
            "+ 3 hybrid (optional) + 1 cssa_no_eca (optional) + 1 cssa_no_switch (optional) "
            "+ 1 cssa_no_spatial (optional)) + 7 modality = 67 arms x 3 seeds = 201 runs") in text
    assert "hybrid_s1234_e123/seed2" in text
    raw = yaml.safe_load(open(CADET48))
    raw["include_optional"] = True
    raw["baselines"]["sizes"] = ["b1"]
    _fusion_study(raw, "cssa_learnable")["backbone"] = "b2"  # on mit_b2: its baseline is added
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(path), *out]) == 0
    text = capsys.readouterr().out
    assert "57 study arms (2 baselines + 11 cssa + 32 gaff + 3 cssa_learnable (optional)" in text
    assert "note: added baseline_frm_ffm_mit_b2" in text and "cssa_learnable_s23/seed0" in text
    plan = make_plan(_study(str(path), str(tmp_path / "out")), ["CADET.DATA.ROOT", root])
    assert plan.arm("cssa_learnable_s23").baseline == "baseline_frm_ffm_mit_b2"
    raw["include_optional"] = False  # left out: no b2 baseline either
    path.write_text(yaml.safe_dump(raw))
    plan = make_plan(_study(str(path), str(tmp_path / "out")), ["CADET.DATA.ROOT", root])
    assert plan.arm("baseline_frm_ffm_mit_b2") is None and plan.arm("cssa_learnable_s23") is None


@pytest.mark.parametrize("where,value", [("study", "yes-please"), ("study", 1), ("study", "true"),
                                         ("top", "maybe"), ("top", 0)])
def test_optional_must_be_a_boolean(tmp_path, where, value):
    raw = yaml.safe_load(open(CADET48))
    if where == "study":
        i = [fs["name"] for fs in raw["fusion_studies"]].index("cssa_soft")
        raw["fusion_studies"][i]["optional"] = value
        key = f"fusion_studies[{i}].optional"
    else:
        raw["include_optional"] = value
        key = "include_optional"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(StudyError, match=rf"^{re.escape(str(path))}:\d+: {re.escape(key)}: must be true or false, got"):
        load_study(str(path))


def test_grid_values_that_make_bad_arm_names_stop(tmp_path):
    raw = yaml.safe_load(open(CADET48))
    _fusion_study(raw, "hybrid")["phase2"]["grid"]["e"]["values"] = [[1], "a b/c"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = _study(str(path), str(tmp_path / "out"))
    root = make_tiny_root(str(tmp_path / "data"))
    assert make_plan(study, ["CADET.DATA.ROOT", root]).arm("hybrid_s1234_ea b/c") is None  # optional: not planned
    with pytest.raises(StudyError, match=r"hybrid_s1234_ea b/c.*not usable as folder names"):
        make_plan(dataclasses.replace(study, include_optional=True), ["CADET.DATA.ROOT", root])


def _fake_params(out: str, arm: str) -> None:
    os.makedirs(os.path.join(out, arm), exist_ok=True)
    with open(os.path.join(out, arm, "params.json"), "w") as f:
        json.dump({"params": 1_000_000, "fusion_params": 1000, "backbone_params": 500_000}, f)


def test_optional_study_report_run_one_and_slurm(tmp_path, capsys):
    """synth_small's optional cssa_soft [4]: reported next to the baseline with Δ only with
    --with-optional; run-one finds it by name; --slurm passes the flag to the follow-up job."""
    from cadet_d2.study.cli import main

    root = make_tiny_root(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    for arm, ap in (("baseline_frm_ffm_mit_b0", 10.0), ("cssa_soft_s4", 13.0)):
        for seed in (0, 1):
            _fake_finished(os.path.join(out, arm, f"seed{seed}"), ap + seed)
        _fake_params(out, arm)
    common = ["--output", out, "--opts", "CADET.DATA.ROOT", root]

    assert main(["report", SYNTH_SMALL, "--no-plots", "--resamples", "10", *common]) == 0
    md = open(os.path.join(out, "report", "report.md")).read()
    assert "## cssa phase 1" in md and "## cssa_soft" not in md and "| cssa_soft_s4 |" not in md
    assert "1 optional arm(s) left out (cssa_soft 1): add --with-optional" in md
    rows = {r["arm"] for r in csv.DictReader(open(os.path.join(out, "report", "results.csv")))}
    assert "cssa_soft_s4" not in rows and "baseline_frm_ffm_mit_b0" in rows

    assert main(["report", SYNTH_SMALL, "--with-optional", "--no-plots", "--resamples", "10", *common]) == 0
    md = open(os.path.join(out, "report", "report.md")).read()
    table = md.split("## cssa_soft phase 1")[1].split("\n## ")[0]
    assert "Baseline: `baseline_frm_ffm_mit_b0`" in table
    assert "| **baseline_frm_ffm_mit_b0** (baseline) | 2/2 | 10.50 ± 0.71 | ref |" in table
    assert "| cssa_soft_s4 | 2/2 | 13.50 ± 0.71 | +3.00 |" in table
    assert "| 1.00 | 0.001000 |" in table  # params, fusion params (M): a few hundred parameters still show
    assert "left out" not in md
    rows = {r["arm"]: r for r in csv.DictReader(open(os.path.join(out, "report", "results.csv")))}
    assert float(rows["cssa_soft_s4"]["test_AP_delta"]) == pytest.approx(3.0)
    assert rows["cssa_soft_s4"]["baseline"] == "baseline_frm_ffm_mit_b0" and rows["cssa_soft_s4"]["fusion"] == "cssa_soft"
    capsys.readouterr()

    # run-one finds an optional arm by name without the flag (SLURM's task lines carry none)
    assert main(["run-one", SYNTH_SMALL, "--arm", "cssa_soft_s4", "--seed", "1", *common]) == 0
    assert "cssa_soft_s4/seed1: already done" in capsys.readouterr().out
    assert main(["run-one", SYNTH_SMALL, "--arm", "cssa_soft_s3", "--seed", "1", *common]) == 2

    def slurm(output: str, *flags: str) -> tuple[list[str], str]:
        assert main(["run", SYNTH_SMALL, "--slurm", *flags, "--output", output, "--opts", "CADET.DATA.ROOT", root]) == 0
        (folder,) = [os.path.join(output, "slurm", d) for d in os.listdir(os.path.join(output, "slurm"))]
        return open(os.path.join(folder, "tasks.txt")).read().splitlines(), open(os.path.join(folder, "next.sbatch")).read()

    tasks, nxt = slurm(str(tmp_path / "s1"))
    assert len(tasks) == 10 and not any("cssa_soft" in t for t in tasks) and "--with-optional" not in nxt
    tasks, nxt = slurm(str(tmp_path / "s2"), "--with-optional")
    assert len(tasks) == 12 and sum("--arm cssa_soft_s4 " in t for t in tasks) == 2
    assert "--slurm --submit --new-only --with-optional" in nxt


# ---- the bootstrap is COCOeval ------------------------------------------------------------------
def _coco_ap(gt: dict, dets: list, image_list: list[int]) -> float:
    """COCOeval box AP (%) on ``image_list`` (with repeats) of ``gt``/``dets``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ims, anns, dd = [], [], []
    for new, old in enumerate(image_list):
        ims.append({"id": new, "width": 100, "height": 100, "file_name": f"x{new}"})
        anns += [{**a, "id": len(anns) + k + 1, "image_id": new} for k, a in enumerate(a for a in gt["annotations"] if a["image_id"] == old)]
        dd += [{**d, "image_id": new} for d in dets if d["image_id"] == old]
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = {"images": ims, "annotations": anns, "categories": gt["categories"]}
        g.createIndex()
        e = COCOeval(g, g.loadRes(dd), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return 100 * e.stats[0]


def test_bootstrap_ap_equals_cocoeval_on_resamples(tmp_path):
    rng = np.random.default_rng(1)
    n = 30
    gt = {"images": [{"id": i, "width": 100, "height": 100, "file_name": f"im{i:03d}"} for i in range(n)],
          "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    dets = []
    for i in range(n):
        for _ in range(rng.integers(0, 4)):
            x, y, w, h = [*rng.uniform(0, 60, 2), *rng.uniform(5, 40, 2)]
            c = int(rng.integers(1, 3))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "bbox": [x, y, w, h],
                                      "area": w * h, "iscrowd": int(rng.random() < 0.1), "category_id": c})
            dets += [{"image_id": i, "category_id": c, "bbox": [x + rng.normal(0, 4), y + rng.normal(0, 4), w, h],
                      "score": float(rng.random())} for _ in range(rng.integers(0, 3))]
        dets += [{"image_id": i, "category_id": int(rng.integers(1, 3)), "bbox": list(rng.uniform(0, 60, 4)),
                  "score": float(rng.random())} for _ in range(rng.integers(0, 3))]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    ev = per_image_eval(str(tmp_path / "gt.json"), str(tmp_path / "dt.json"))
    w = np.vstack([np.ones((1, n)), resample_weights(n, 4, seed=3)])
    mine = resampled_ap(ev, w)
    for b in range(len(w)):
        images = [i for i in range(n) for _ in range(int(w[b, i]))]
        assert mine[b] == pytest.approx(_coco_ap(gt, dets, images), abs=1e-9)


# ---- (b) a tiny study end to end ----------------------------------------------------------------
RUN_DEADLINE_S = 240  # per training run of the tiny study (about 20 s each on the 2-core Zen 3 machine)


def _ablate(*args: str, runs: int = 1) -> subprocess.CompletedProcess:
    """tools/ablate.py ARGS; past ``runs`` x RUN_DEADLINE_S it is killed and the test fails with its output."""
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "ablate.py"), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=runs * RUN_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"ablate.py {' '.join(args)} did not end within {runs} x {RUN_DEADLINE_S}s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# The runner's progress line: ETA as stats.fmt_duration writes it (minutes, hours or days).
ETA_RE = re.compile(r"ETA (\d+m\d\ds|\d+h\d\dm\d\ds|\d+d\d\dh\d\dm) \(\d+ runs x mean ")


def test_eta_format_past_an_hour():
    from cadet_d2.study.stats import fmt_duration

    assert [fmt_duration(s) for s in (65, 3725, 2 * 86400 + 3 * 3600 + 4 * 60)] == ["1m05s", "1h02m05s", "2d03h04m"]
    for s in (59, 3599, 3600, 86399, 86400 * 3):
        assert ETA_RE.search(f"ETA {fmt_duration(s)} (3 runs x mean {fmt_duration(s / 3)})"), s


def _tiny_study(tmp_path) -> tuple[str, str, str]:
    """synth_small.yaml cut down: baseline + cssa [1] [4] (phase 2: top 1 x tau 0.3) + an arm that
    passes the checks before running but fails at build (a registered module whose builder
    raises); 4 iterations, a checkpoint every 2."""
    root = make_tiny_root(str(tmp_path / "data"))
    broken = tmp_path / "broken_fusion.py"
    broken.write_text("from cadet_d2.modeling.fusion import register_fusion\n\n\n"
                      "@register_fusion('broken')\ndef build(cfg, channels, stage):\n"
                      "    raise RuntimeError('broken fusion builder')\n")
    raw = yaml.safe_load(open(SYNTH_SMALL))
    cssa = raw["fusion_studies"][0]
    cssa["phase2"]["grid"]["t"]["values"] = [0.3]
    raw["fusion_studies"] = [cssa, {"name": "bad", "fusion": "broken", "stage_sets": [[4]],
                                    "options": {"CADET.FUSION.IMPORTS": [str(broken)]}}]
    raw["modality"] = {"sets": []}
    raw["schedule"] = {"iterations": 4, "ims_per_batch": 2, "base_lr": 0.01, "warmup_iters": 1, "checkpoint_period": 2}
    out = str(tmp_path / "out")
    raw["output"] = out
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path), root, out


def test_tiny_study_run_kill_resume_report(tmp_path):
    t0 = time.time()
    path, root, out = _tiny_study(tmp_path)
    opts = ["--opts", "CADET.DATA.ROOT", root]
    study = load_study(path)
    plan = make_plan(study, opts[1:])
    assert len(plan.runs) == 10 and sum(bool(r.arm.pending) for r in plan.runs) == 2
    first = [r for r in plan.runs if r.arm.name == "baseline_frm_ffm_mit_b0"]

    # Start, and SIGKILL once the first run has finished and the second has a checkpoint.
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "ablate.py"), "run", path, *opts], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (first[0].state() == "done" and last_checkpoint(first[1].dir)):
        assert proc.poll() is None and time.time() < deadline, "ablate ended before the kill"
        time.sleep(0.05)
    child = read_status(first[1].dir).get("child_pid")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert child and _gone(child, 20), "the training process outlived the killed ablate"
    assert first[1].state() == "partial" and read_status(first[1].dir)["state"] == "running"
    mtime = os.path.getmtime(os.path.join(first[0].dir, METRICS))
    t_kill = time.time() - t0

    r = _ablate("run", path, *opts, runs=8)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]  # 1: the "bad" arm failed
    assert "baseline_frm_ffm_mit_b0/seed0" not in r.stdout  # finished: not redone, not even listed
    assert "baseline_frm_ffm_mit_b0/seed1: resuming from model_" in r.stdout
    assert ETA_RE.search(r.stdout) and "FAILED (exit code 1)" in r.stdout
    assert os.path.getmtime(os.path.join(first[0].dir, METRICS)) == mtime
    assert len(read_status(first[0].dir)["attempts"]) == 1
    resumed = read_status(first[1].dir)
    assert resumed["state"] == "done" and len(resumed["attempts"]) == 2
    assert resumed["attempts"][1]["resumed_from"].startswith("model_") and resumed["attempts"][1]["start_iter"] >= 2
    bad = read_status(os.path.join(out, "bad_s4", "seed0"))
    assert bad["state"] == "failed" and bad["attempts"][-1]["exit_code"] == 1
    assert any("broken fusion builder" in line for line in bad["stderr_tail"])
    plan = make_plan(study, opts[1:])
    states = {r.key: r.state() for r in plan.runs}
    assert not any(r.arm.pending for r in plan.runs)
    assert sorted(s for s in states.values()) == ["done"] * 8 + ["failed"] * 2, states
    phase2 = [a.name for a in plan.arms if a.phase == "2"]
    assert len(phase2) == 1 and re.fullmatch(r"cssa_s[14]_t0\.3", phase2[0])
    t_run = time.time() - t0

    # Bootstrap AP on the full test set == the run's own COCO AP.
    d = os.path.join(out, "cssa_s4", "seed0")
    ev = per_image_eval(os.path.join(d, "inference", "synth_test", "synth_test_coco_format.json"),
                        os.path.join(d, "inference", "synth_test", "coco_instances_results.json"))
    ap = json.load(open(os.path.join(d, METRICS)))["datasets"]["synth_test"]["AP"]
    assert resampled_ap(ev, np.ones((1, len(ev.images))))[0] == pytest.approx(ap if ap is not None else 0.0, abs=1e-6)

    from cadet_d2.study.report import write_report

    lines: list[str] = []
    report = write_report(study, opts[1:], echo=lines.append)
    md = open(report).read()
    assert "BASELINE MISSING" not in md + "\n".join(lines)
    for title in ("## baselines", "## cssa phase 1", "## cssa phase 2", "## bad phase 1"):
        assert title in md
    assert md.count("| **baseline_frm_ffm_mit_b0** (baseline) | 2/2 |") == 4  # heads every table
    assert "| ΔAP |" in md and "| Δ day AP |" in md and "| Δ night AP |" in md and "| ΔAPl |" in md
    row = next(line for line in md.splitlines() if line.startswith("| cssa_s4 |"))
    assert re.search(r"\| \d+\.\d\d ± \d+\.\d\d \| [+-]\d+\.\d\d \| \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] \|", row), row
    assert "| bad_s4 | 0/2 (2 failed) |" in md and "## Failed runs" in md
    rows = {r["arm"]: r for r in csv.DictReader(open(os.path.join(out, "report", "results.csv")))}
    assert set(rows) == {"baseline_frm_ffm_mit_b0", "cssa_s1", "cssa_s4", phase2[0], "bad_s4"}
    lo, hi = float(rows["cssa_s4"]["test_AP_delta_ci_lo"]), float(rows["cssa_s4"]["test_AP_delta_ci_hi"])
    assert lo <= float(rows["cssa_s4"]["test_AP_delta"]) + 1e-9 and lo <= hi
    assert int(rows["cssa_s4"]["fusion_params"]) < int(rows["baseline_frm_ffm_mit_b0"]["fusion_params"])
    assert float(rows["cssa_s4"]["wall_s_mean"]) > 0 and float(rows["cssa_s4"]["peak_rss_mb"]) > 100
    assert os.path.isfile(os.path.join(out, "cssa_s4", "params.json"))
    for png in ("ap_vs_fusion_params.png", "ap_per_stage_set.png", "day_vs_night.png"):
        assert os.path.getsize(os.path.join(out, "report", png)) > 1000

    # No baseline runs: a loud warning in every table and on stdout, and no Δ.
    shutil.move(os.path.join(out, "baseline_frm_ffm_mit_b0"), str(tmp_path / "moved"))
    lines.clear()
    md = open(write_report(study, opts[1:], echo=lines.append)).read()
    assert md.count("!!! WARNING: BASELINE MISSING: baseline_frm_ffm_mit_b0") >= 3
    assert any("BASELINE MISSING" in line for line in lines)
    row = next(line for line in md.splitlines() if line.startswith("| cssa_s4 |"))
    assert row.split(" | ")[3:5] == ["–", "–"]  # no ΔAP, no interval
    print(f"\ntiny study: kill after {t_kill:.0f}s, all runs done after {t_run:.0f}s, "
          f"reports done after {time.time() - t0:.0f}s")


def _gone(pid: int, timeout: float) -> bool:
    """The process ``pid`` ended (a zombie waiting for its new parent to reap it counts)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_dry_run_slurm_scripts_and_run_one(tmp_path, capsys):
    from cadet_d2.study.cli import main

    path, root, out = _tiny_study(tmp_path)
    opts = ["--opts", "CADET.DATA.ROOT", root]
    assert main(["run", path, "--dry-run", *opts]) == 0
    text = capsys.readouterr().out
    assert text.count(" -m cadet_d2.engine.train --config-file ") == 8  # baseline 2 + cssa phase 1 4 + bad 2
    assert "cssa_top1_t0.3: pending: needs phase-1 results (0/4" in text
    assert not os.path.exists(os.path.join(out, "baseline_frm_ffm_mit_b0"))  # nothing trained

    assert main(["run", path, "--slurm", *opts]) == 0
    (folder,) = [os.path.join(out, "slurm", d) for d in os.listdir(os.path.join(out, "slurm"))]
    tasks = open(os.path.join(folder, "tasks.txt")).read().splitlines()
    assert len(tasks) == 8 and all(" run-one " in t and f"--opts CADET.DATA.ROOT {root}" in t for t in tasks)
    assert "--arm baseline_frm_ffm_mit_b0 --seed 1" in tasks[1]
    array = open(os.path.join(folder, "array.sbatch")).read()
    assert "#SBATCH --array=0-7%8" in array and "#SBATCH --gres=gpu:1" in array and "tasks.txt" in array
    assert "#SBATCH --signal=B:USR1@300" in array and "#SBATCH --requeue" in array and 'eval "exec $LINE"' in array
    assert all(t.split()[1:3] == ["-m", "cadet_d2.study"] for t in tasks)  # the installed package, no path
    nxt = open(os.path.join(folder, "next.sbatch")).read()
    assert "-m cadet_d2.study run " in nxt and "--slurm --submit --new-only" in nxt and "--signal" not in nxt
    assert "--dependency=afterany" in open(os.path.join(folder, "submit.sh")).read()

    # run-one (what each array task runs): a failing run records its error and exits 1
    assert main(["run-one", path, "--arm", "bad_s4", "--seed", "0", *opts]) == 1
    status = read_status(os.path.join(out, "bad_s4", "seed0"))
    assert status["state"] == "failed" and status["error"] == "exit code 1" and len(status["attempts"]) == 1
    assert status["attempts"][0]["peak_rss_mb"] > 50 and any("broken fusion builder" in x for x in status["stderr_tail"])
    assert status["attempts"][0]["machine"] == machine_label()


def test_runner_lock_no_retry_frozen_selection_and_exit_0_without_metrics(tmp_path, capsys):
    """The runner's documented rules, without training: a run folder locked by another runner is
    left to it; --no-retry-failed skips failed runs; the phase-2 selection frozen in
    selection_<study>.json outlives new phase-1 results; a training that exits 0 without its
    final metrics counts as failed."""
    from cadet_d2.study.cli import main
    from cadet_d2.study.plan import selection_path
    from cadet_d2.study.rundir import write_status
    from cadet_d2.study.run import run_study

    path, root, out = _tiny_study(tmp_path)
    opts = ["--opts", "CADET.DATA.ROOT", root]
    study = load_study(path)
    for seed in (0, 1):
        _fake_finished(os.path.join(out, "baseline_frm_ffm_mit_b0", f"seed{seed}"), 10.0)
        _fake_finished(os.path.join(out, "cssa_s1", f"seed{seed}"), 5.0)
        _fake_finished(os.path.join(out, "cssa_s4", f"seed{seed}"), 9.0)

    # Frozen selection: top 1 is [4]; better [1] results afterwards do not move phase 2.
    plan = make_plan(study, opts[1:], freeze=True)
    assert json.load(open(selection_path(study, "cssa")))["stage_sets"] == [[4]]
    _fake_finished(os.path.join(out, "cssa_s1", "seed0"), 20.0)
    _fake_finished(os.path.join(out, "cssa_s1", "seed1"), 20.0)
    assert [a.name for a in make_plan(study, opts[1:]).arms if a.phase == "2"] == ["cssa_s4_t0.3"]
    os.remove(selection_path(study, "cssa"))
    assert [a.name for a in make_plan(study, opts[1:]).arms if a.phase == "2"] == ["cssa_s1_t0.3"]
    plan = make_plan(study, opts[1:], freeze=True)  # frozen again: [1]

    # --no-retry-failed
    write_status(os.path.join(out, "bad_s4", "seed0"), {"state": "failed", "error": "exit code 1", "attempts": []})
    capsys.readouterr()
    assert main(["run", path, "--dry-run", "--no-retry-failed", *opts]) == 0
    text = capsys.readouterr().out
    assert "bad_s4/seed0" not in text and "bad_s4/seed1: train: " in text and "cssa_s1_t0.3/seed0: train: " in text
    assert main(["run", path, "--dry-run", *opts]) == 0
    assert "bad_s4/seed0: train: " in capsys.readouterr().out

    # .lock: another runner (a process holding the locks) owns every unfinished run: nothing trains here.
    todo = [r.dir for r in plan.runs if r.state() != "done"]
    assert len(todo) == 4
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        "fds = [os.open(os.path.join(d, '.lock'), os.O_RDWR | os.O_CREAT) for d in sys.argv[1:]]\n"
        "[fcntl.flock(fd, fcntl.LOCK_EX) for fd in fds]\nprint('locked', flush=True)\ntime.sleep(120)\n"), *todo],
        stdout=subprocess.PIPE, text=True)
    for d in todo:
        os.makedirs(d, exist_ok=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        lines: list[str] = []
        summary = run_study(study, opts[1:], echo=lines.append)
    finally:
        holder.kill()
        holder.wait()
    assert summary["locked"] == 4 and summary["ran"] == 0, summary
    assert sum("running in another process (locked), skipped" in line for line in lines) == 4
    assert lines[-1].endswith("0 pending, 4 running elsewhere"), lines[-1]  # none of them finished meanwhile
    assert not any(os.path.exists(os.path.join(d, "stdout.log")) for d in todo)

    # A training that exits 0 but writes no metrics: failed, with the reason.
    script = tmp_path / "exit0.py"
    script.write_text("import sys\nsys.exit(0)\n")
    raw = yaml.safe_load(open(path))
    raw["train_script"] = str(script)
    open(path, "w").write(yaml.safe_dump(raw))
    assert main(["run-one", path, "--arm", "bad_s4", "--seed", "1", *opts]) == 1
    status = read_status(os.path.join(out, "bad_s4", "seed1"))
    assert status["state"] == "failed" and status["error"] == f"exit code 0 but no final {METRICS}"
    assert status["command"][1] == str(script) and status["attempts"][0]["exit_code"] == 0


def test_report_warns_when_runs_were_trained_with_other_opts(tmp_path):
    """Runs trained with ``--opts SOLVER.MAX_ITER 7`` and a report given no such --opts: the report
    says so at the top; given the same --opts, it names them in the schedule line and warns not."""
    from cadet_d2.study.cli import main
    from cadet_d2.study.rundir import write_status

    root = make_tiny_root(str(tmp_path / "data"))
    out = str(tmp_path / "out")
    opts = ["CADET.DATA.ROOT", root]
    plan = make_plan(_study(SYNTH_SMALL, out), opts + ["SOLVER.MAX_ITER", "7"])
    runs = [r for r in plan.runs if not r.arm.pending][:2]
    for run in runs:
        _fake_finished(run.dir, 10.0)
        write_status(run.dir, {"state": "done", "command": [sys.executable, *plan.command(run)]})
    common = ["--output", out, "--no-plots", "--resamples", "10"]

    assert main(["report", SYNTH_SMALL, *common, "--opts", *opts]) == 0
    md = open(os.path.join(out, "report", "report.md")).read()
    assert f"**Warning: 2 finished run(s) were trained with other arguments than this report assumes (e.g. {runs[0].key}" in md
    assert "Overrides given to every run" in md and "SOLVER.MAX_ITER 7" not in md

    assert main(["report", SYNTH_SMALL, *common, "--opts", *opts, "SOLVER.MAX_ITER", "7"]) == 0
    md = open(os.path.join(out, "report", "report.md")).read()
    assert "Warning: " not in md
    assert f"Overrides given to every run (`--opts`, applied last): `CADET.DATA.ROOT {root} SOLVER.MAX_ITER 7`." in md
