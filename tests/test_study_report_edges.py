"""tools/ablate.py without training: runs reused after the study file changed (stale), and the
report's edge cases (a metric missing in one run, a run without predictions, one seed, a
failed seed on one side, an arm identical to the baseline, two machines)."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import yaml

from conftest import make_tiny_root

from cadet_d2.study import load_study, make_plan
from cadet_d2.study.cli import main
from cadet_d2.study.rundir import write_status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = ("baseline_frm_ffm_mit_b0", "cssa_s4")


def _study_file(tmp_path, seeds=2, threshold=0.5) -> tuple[str, str]:
    """A study of the baseline and CSSA at stage 4 on MiT-b0 (nothing is trained here)."""
    root = str(tmp_path / "data")
    if not os.path.isdir(root):
        make_tiny_root(root)
    raw = {"name": "edges", "base_config": os.path.join(REPO, "configs", "Base-CADET.yaml"),
           "output": str(tmp_path / "out"), "seeds": seeds, "backbone": "b0", "data": {"root": root, "name": "synth"},
           "schedule": {"iterations": 4, "ims_per_batch": 2, "base_lr": 0.01},
           "opts": ["MODEL.DEVICE", "cpu"], "baselines": {"fusion": "frm_ffm", "sizes": ["b0"]},
           "fusion_studies": [{"name": "cssa", "fusion": "cssa", "stage_sets": [[4]],
                               "options": {"CADET.FUSION.CSSA.THRESHOLD": threshold}}]}
    path = tmp_path / f"study_{seeds}_{threshold}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path), raw["output"]


def _predictions(folder: str, hits: int) -> None:
    """COCOEvaluator's two files for 4 test images with one box each; ``hits`` of them detected."""
    os.makedirs(folder, exist_ok=True)
    gt = {"images": [{"id": i, "width": 64, "height": 48, "file_name": f"im{i}.png"} for i in range(4)],
          "annotations": [{"id": i + 1, "image_id": i, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0,
                           "category_id": 1} for i in range(4)],
          "categories": [{"id": 1, "name": "person"}]}
    dets = [{"image_id": i, "category_id": 1, "bbox": [10, 10, 20, 20] if i < hits else [40, 30, 5, 5],
             "score": 0.9} for i in range(4)]
    with open(os.path.join(folder, "synth_test_coco_format.json"), "w") as f:
        json.dump(gt, f)
    with open(os.path.join(folder, "coco_instances_results.json"), "w") as f:
        json.dump(dets, f)


def _fake_run(plan, run, ap: float, hits: int = 2, machine: str = "cpu A", drop: tuple[str, ...] = (),
              predictions: bool = True) -> None:
    """A finished run as `ablate run` leaves it: model_final.pth, metrics, predictions, status."""
    os.makedirs(run.dir, exist_ok=True)
    open(os.path.join(run.dir, "model_final.pth"), "wb").close()
    metrics = {m: ap for m in ("AP", "AP50", "AP75", "APs", "APm", "APl") if m not in drop}
    with open(os.path.join(run.dir, "eval_metrics.json"), "w") as f:
        json.dump({"datasets": {"synth_test": metrics}, "weights": ""}, f)
    if predictions:
        _predictions(os.path.join(run.dir, "inference", "synth_test"), hits)
    write_status(run.dir, {"state": "done", "command": [sys.executable, *plan.command(run)], "wall_s": 1.0,
                           "peak_rss_mb": 100.0, "attempts": [{"machine": machine, "wall_s": 1.0}]})


def _fake_params(out: str) -> None:
    for arm in ARMS:
        os.makedirs(os.path.join(out, arm), exist_ok=True)
        with open(os.path.join(out, arm, "params.json"), "w") as f:
            json.dump({"params": 1_000_000, "fusion_params": 1000, "backbone_params": 500_000}, f)


def _report(path: str, out: str, capsys) -> tuple[str, dict]:
    assert main(["report", path, "--output", out, "--no-plots", "--resamples", "50"]) == 0
    capsys.readouterr()
    md = open(os.path.join(out, "report", "report.md"), encoding="utf-8").read()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    return md, rows


def test_a_changed_arm_is_not_reused(tmp_path, capsys):
    """Runs finished with THRESHOLD 0.5; the study file then says 0.6: `plan` marks them stale,
    `run`, `run --dry-run`, `run --slurm` and `run-one` stop naming the study file and the
    changed value before anything runs. The unchanged file, its output copied elsewhere, and
    another CADET.CHECKPOINT.KEEP_LAST reuse them (no stale, no warning in the report)."""
    path, out = _study_file(tmp_path)
    plan = make_plan(load_study(path))
    for run in plan.runs:
        _fake_run(plan, run, 10.0)
    _fake_params(out)
    edited, _ = _study_file(tmp_path, threshold=0.6)

    assert main(["plan", edited]) == 0
    text = capsys.readouterr().out
    assert sum(line.split()[2:3] == ["stale"] for line in text.splitlines()) == 2 and "cssa_s4/seed0" in text
    assert "0 to run, 2 stale (trained with other arguments" in text
    for cmd in (["run", edited], ["run", edited, "--dry-run"], ["run", edited, "--slurm"],
                ["run-one", edited, "--arm", "cssa_s4", "--seed", "1"]):
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err
        n = 1 if cmd[0] == "run-one" else 2  # run-one: its own run
        assert err.startswith(f"study error: {edited}: {n} run(s) were trained with other arguments"), (cmd, err)
        assert "recorded but not planned ['0.5'], planned but not recorded ['0.6']" in err, err
    assert not os.path.exists(os.path.join(out, "cssa_s4", "seed0", "stdout.log"))  # nothing ran
    assert not os.path.exists(os.path.join(out, "slurm"))
    # run-one of a run that is not stale is not stopped by the stale ones
    assert main(["run-one", edited, "--arm", "baseline_frm_ffm_mit_b0", "--seed", "0"]) == 0
    assert "already done" in capsys.readouterr().out

    moved = str(tmp_path / "moved")
    shutil.copytree(out, moved)
    assert main(["run", path, "--output", moved, "--dry-run"]) == 0
    assert "stale" not in capsys.readouterr().out
    md, _ = _report(path, moved, capsys)
    assert "Warning" not in md
    # keeping fewer checkpoints does not change a run's numbers: not stale either
    assert main(["run", path, "--dry-run", "--opts", "CADET.CHECKPOINT.KEEP_LAST", "2"]) == 0
    assert "stale" not in capsys.readouterr().out


def test_report_edge_cases(tmp_path, capsys):
    path, out = _study_file(tmp_path)
    plan = make_plan(load_study(path))
    base = [r for r in plan.runs if r.arm.name == ARMS[0]]
    arm = [r for r in plan.runs if r.arm.name == ARMS[1]]

    # An arm identical to the baseline (same metrics and predictions): Δ 0 and the interval [0, 0].
    for runs in (base, arm):
        for r in runs:
            _fake_run(plan, r, 10.0 + r.seed, hits=2)
    _fake_params(out)
    md, rows = _report(path, out, capsys)
    assert "Warning" not in md and "nan" not in md.lower()
    assert rows["cssa_s4"][:4] == ["2/2", "10.50 ± 0.71", "+0.00", "[+0.00, +0.00]"]
    assert rows["**baseline_frm_ffm_mit_b0** (baseline)"][:4] == ["2/2", "10.50 ± 0.71", "ref", "–"]

    # AP50 missing from one run's metrics, one baseline run without predictions, and the
    # baseline's seed 1 from another machine: marked cells and warnings, nothing dropped silently.
    _fake_run(plan, arm[1], 11.0, hits=3, drop=("AP50",))
    shutil.rmtree(os.path.join(base[1].dir, "inference"))
    _fake_run(plan, base[1], 11.0, machine="cpu B", predictions=False)
    md, rows = _report(path, out, capsys)
    cells = rows["cssa_s4"]
    assert cells[4] == "10.00 (1/2 seeds)" and cells[5] == "-0.50", cells  # AP50 over seed 0 only, minus 10.5
    assert cells[3].endswith("(runs 2/2, baseline 1/2)"), cells
    assert ("2 finished run(s) lack values that their arm's cells use" in md and
            "cssa_s4/seed1: test AP50" in md and "baseline_frm_ffm_mit_b0/seed1: predictions inference/synth_test/" in md)
    assert "the finished runs come from 2 machines" in md
    assert "nan" not in md.lower()

    # One seed failed on the arm's side: the row says so, the Δ names the unpaired seeds.
    write_status(arm[1].dir, {"state": "failed", "error": "exit code 1", "command": [sys.executable,
                                                                                     *plan.command(arm[1])]})
    os.remove(os.path.join(arm[1].dir, "eval_metrics.json"))
    md, rows = _report(path, out, capsys)
    assert rows["cssa_s4"][0] == "1/2 (1 failed)"
    assert "cssa_s4 compare its finished seeds [0] with the baseline's [0, 1]" in md
    assert "- `cssa_s4/seed1`: exit code 1" in md

    # Predictions missing on every run of the arm: the interval is "n/a", with the reason.
    shutil.rmtree(os.path.join(arm[0].dir, "inference"))
    md, rows = _report(path, out, capsys)
    assert rows["cssa_s4"][3] == "n/a" and "cssa_s4/seed0: predictions inference/synth_test/" in md


def test_report_with_one_seed(tmp_path, capsys):
    """One seed: each cell is the value alone (the header says so), the interval over the test
    images still exists; no NaN."""
    path, out = _study_file(tmp_path, seeds=1)
    plan = make_plan(load_study(path))
    for r in plan.runs:
        _fake_run(plan, r, 10.0 if r.arm.name == ARMS[0] else 20.0, hits=2 if r.arm.name == ARMS[0] else 4)
    _fake_params(out)
    md, rows = _report(path, out, capsys)
    assert "the value alone with one seed: no std" in md
    lo, hi = (float(x) for x in rows["cssa_s4"][3].strip("[]").split(","))
    assert rows["cssa_s4"][:3] == ["1/1", "20.00", "+10.00"] and 0 <= lo < hi, rows["cssa_s4"]
    assert "nan" not in md.lower() and "Warning" not in md


SPEC = """\
name: bad
base_config: {base}
output: {out}
schedule: {{iterations: 4, ims_per_batch: 2, base_lr: 0.01}}
baselines: {{fusion: frm_ffm, sizes: [b0]}}
fusion_studies:
  - name: cssa
    fusion: cssa
    stage_sets: [[4]]
    options:
      CADET.FUSION.CSSA.THRESHOLD: 0.5
"""


@pytest.mark.parametrize("edit,error", [
    (lambda t: t + "      CADET.FUSION.CSSA.THRESHOLD: 0.7\n",
     ":12: 'CADET.FUSION.CSSA.THRESHOLD' given twice in one mapping (first on line 11)"),
    (lambda t: t + "  - name: cssa\n    fusion: gaff\n    stage_sets: [[1]]\n",
     ":6: fusion_studies: names must be distinct"),
    (lambda t: t.replace("configs/Base-CADET.yaml", "configs/Nope.yaml"), ":2: base_config: no such file 'configs/Nope.yaml'"),
    (lambda t: t.replace("    fusion: cssa\n", "    fusion: cssa\n    colour: red\n"),
     ":9: fusion_studies[0]: unknown key(s) ['colour']"),
    (lambda t: t.replace("[[4]]", "[[5]]"), ":9: fusion_studies[0].stage_sets: [5] is not a stage list"),
    (lambda t: t + "seeds: 0\n", ":12: seeds: must be a count N >= 1"),
    (lambda t: t + "seeds: true\n", ":12: seeds: must be a count N >= 1"),
    (lambda t: t.replace("iterations: 4", "iterations: ten"), ":4: schedule.iterations: must be an integer >= 1, got 'ten'"),
    (lambda t: t.replace("ims_per_batch: 2", "ims_per_batch: 0"), ":4: schedule.ims_per_batch: must be an integer >= 1"),
    (lambda t: t.replace("base_lr: 0.01", "base_lr: 0.01, steps: [0.5, x]"), ":4: schedule.steps: must be a list"),
])
def test_a_bad_study_file_names_its_line_before_anything_runs(tmp_path, capsys, monkeypatch, edit, error):
    monkeypatch.chdir(REPO)  # base_config relative to the repository root, as documented
    path = tmp_path / "bad.yaml"
    path.write_text(edit(SPEC.format(base="configs/Base-CADET.yaml", out=tmp_path / "out")))
    for cmd in (["plan"], ["run"], ["run", "--slurm"]):
        assert main([*cmd, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"study error: {path}{error}"), err
    assert not os.path.exists(tmp_path / "out")


def test_missing_baseline_says_the_command_that_trains_it(tmp_path, capsys):
    """The report of an output given with --output (and --opts): its BASELINE MISSING line names
    the `run` command with the same --output and --opts, not the study file's output."""
    path, _ = _study_file(tmp_path)
    moved = str(tmp_path / "elsewhere")
    study = load_study(path)
    plan = make_plan(study, ["MODEL.RPN.POST_NMS_TOPK_TEST", "50"])
    for r in plan.runs:
        if r.arm.name == ARMS[1]:
            r.dir = os.path.join(moved, ARMS[1], f"seed{r.seed}")
            _fake_run(plan, r, 10.0)
    assert main(["report", path, "--output", moved, "--no-plots", "--resamples", "10",
                 "--opts", "MODEL.RPN.POST_NMS_TOPK_TEST", "50"]) == 0
    md = open(os.path.join(moved, "report", "report.md"), encoding="utf-8").read()
    assert (f"Run it: python tools/ablate.py run {path} --output {moved} --opts MODEL.RPN.POST_NMS_TOPK_TEST 50 !!!"
            in md), md[:2000]
    assert main(["report", path, "--no-plots"]) == 0
    assert f"Run it: python tools/ablate.py run {path} !!!" in capsys.readouterr().out


def test_submit_needs_slurm_and_sbatch(tmp_path, capsys, monkeypatch):
    """`run --submit` without --slurm stops (it would train everything here); `--slurm --submit`
    where there is no sbatch writes the scripts, says so and exits 1."""
    path, out = _study_file(tmp_path)
    for flag in ("--submit", "--new-only"):
        assert main(["run", path, flag]) == 2
        assert f"study error: {flag} needs --slurm" in capsys.readouterr().err
    assert not os.path.exists(out)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["run", path, "--slurm", "--submit"]) == 1
    text = capsys.readouterr().out
    assert "error: sbatch is not available here, nothing submitted" in text
    assert os.path.isfile(os.path.join(out, "slurm", os.listdir(os.path.join(out, "slurm"))[0], "array.sbatch"))


def test_a_bad_override_value_stops_with_the_study_file(tmp_path, capsys):
    """A value of the wrong type in --opts (or the study's opts) fails loading the base config,
    before any arm: every subcommand stops with the study file, not a traceback."""
    path, out = _study_file(tmp_path)
    for cmd in (["plan"], ["run", "--dry-run"], ["run"], ["run", "--slurm"], ["report", "--no-plots"]):
        assert main([*cmd[:1], path, *cmd[1:], "--opts", "SOLVER.STEPS", "abc"]) == 2, cmd
        err = capsys.readouterr().err
        assert err.startswith(f"study error: {path}: opts, data or --opts: Type mismatch") and "SOLVER.STEPS" in err, err
    raw = yaml.safe_load(open(path))
    raw["opts"] += ["MODEL.RPN.POST_NMS_TOPK_TEST", "many"]
    open(path, "w").write(yaml.safe_dump(raw))
    assert main(["plan", path]) == 2
    assert "MODEL.RPN.POST_NMS_TOPK_TEST" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_an_unknown_fusion_module_stops_before_anything_runs(tmp_path, capsys):
    """An arm naming a fusion module that is not registered (a typo, a missing
    CADET.FUSION.IMPORTS): plan and run stop naming the study file, the arm and the registered
    modules, instead of starting the study and failing each of that arm's runs."""
    path, out = _study_file(tmp_path)
    raw = yaml.safe_load(open(path))
    raw["fusion_studies"].append({"name": "typo", "fusion": "csa", "stage_sets": [[4]]})
    open(path, "w").write(yaml.safe_dump(raw))
    for cmd in (["plan"], ["run", "--dry-run"], ["run"], ["run", "--slurm"]):
        assert main([cmd[0], path, *cmd[1:]]) == 2, cmd
        err = capsys.readouterr().err
        assert err.startswith(f"study error: {path}: arm typo_s4: Unknown fusion module 'csa'. Registered: "), err
    assert not os.path.exists(out)


def test_report_draws_every_arms_miss_rate_curve(tmp_path, capsys):
    """Runs that stored miss-rate curves (OUTPUT_DIR/miss_rate/<set>.json, as the evaluator writes
    them): the report's plots hold one figure of the test set with a curve per arm."""
    import glob

    import numpy as np

    from cadet_d2.evaluation.curves import read_curves, write_curves
    from cadet_d2.evaluation.miss_rate import SettingResult
    from cadet_d2.study.plots import miss_rate_curves
    from cadet_d2.study.report import Reporter, collect

    path, out = _study_file(tmp_path, seeds=1)
    plan = make_plan(load_study(path))
    for i, run in enumerate(plan.runs):
        _fake_run(plan, run, 10.0)
        miss = np.array([0.75, 0.5, 0.25]) / (i + 1)
        write_curves(os.path.join(run.dir, "miss_rate"), "synth_test",
                     {"reasonable": SettingResult(0.1 * (i + 1), 4, 4, np.array([0.0, 0.25, 0.5]), miss, miss)})
    stored = read_curves(os.path.join(plan.runs[1].dir, "miss_rate", "synth_test.json"))["reasonable"]
    assert stored["MR-2"] == pytest.approx(20.0) and stored["recall"] == pytest.approx(87.5)
    assert stored["fppi"][-1] == pytest.approx(0.5) and stored["miss_rate"][-1] == pytest.approx(0.125)
    _fake_params(out)
    rep = Reporter(plan, collect(plan, echo=lambda _: None), 10, lambda _: None)
    label = next(k for k, v in rep.sets.items() if v == "synth_test")
    names = miss_rate_curves(rep, plan, str(tmp_path))
    assert names == [f"miss_rate_{label}.png"] and os.path.getsize(tmp_path / names[0]) > 1000
    assert main(["report", path, "--output", out, "--resamples", "10"]) == 0
    capsys.readouterr()
    md = open(os.path.join(out, "report", "report.md"), encoding="utf-8").read()
    assert f"![miss_rate_{label}.png](miss_rate_{label}.png)" in md
    assert glob.glob(os.path.join(out, "report", "miss_rate_*.png"))
