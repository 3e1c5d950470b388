"""Sensor failure: modality groups, the corruptions, modality dropout in the training mapper,
test-time conditions in the test mapper, and the per-condition evaluation table (CPU, tiny)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from cadet_d2.config import validate_cadet_config
from cadet_d2.data.corrupt import Condition, ModalityDropout, conditions_from_config, corrupt
from cadet_d2.layout import group_channels, modality_slices
from cadet_d2.data.mapper import MultiModalDatasetMapper
from conftest import make_tiny_root, registered_cfg, tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SLICES = {"rgb": slice(0, 3), "thermal": slice(3, 4), "event": slice(4, 5)}


def _image(seed: int = 0, h: int = 6, w: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, size=(h, w, 5)).astype(np.float32)


def test_group_channels():
    assert group_channels("rgb", SLICES, "K") == [0, 1, 2]
    assert group_channels("thermal+event", SLICES, "K") == [3, 4]
    with pytest.raises(ValueError, match=r"K: 'depth' names \['depth'\]"):
        group_channels("depth", SLICES, "K")


@pytest.mark.parametrize("mode", ["zero", "noise", "frozen"])
def test_corrupt_touches_only_the_group(mode):
    image = _image()
    frozen = _image(seed=1, h=3, w=4)  # another size: resized
    out = corrupt(image, [3, 4], mode, np.random.RandomState(0), frozen)
    np.testing.assert_array_equal(out[:, :, :3], image[:, :, :3])
    assert not np.array_equal(out[:, :, 3:], image[:, :, 3:])
    if mode == "zero":
        assert (out[:, :, 3:] == 0).all()
    elif mode == "noise":
        assert out[:, :, 3:].min() >= 0 and out[:, :, 3:].max() <= 255 and out[:, :, 3:].std() > 30
    else:
        assert out[:, :, 3:].min() >= frozen[:, :, 3:].min() and out[:, :, 3:].max() <= frozen[:, :, 3:].max()
        same = corrupt(_image(seed=5), [3, 4], mode, np.random.RandomState(0), frozen)
        np.testing.assert_array_equal(same[:, :, 3:], out[:, :, 3:])  # the same frame in every image
    np.testing.assert_array_equal(image, _image())  # input untouched


def test_test_noise_depends_on_file_only():
    cond = Condition("rgb", "noise", (0, 1, 2))
    a = cond.apply(_image(), "a.npy", None)
    np.testing.assert_array_equal(a, cond.apply(_image(), "a.npy", None))
    assert not np.array_equal(a, cond.apply(_image(), "b.npy", None))


def test_modality_dropout_rate_and_groups():
    drop = ModalityDropout(0.5, [[0, 1, 2], [3, 4]], "zero")
    np.random.seed(0)
    dropped = {"rgb": 0, "aux": 0, "none": 0}
    for _ in range(400):
        out, channels = drop(_image())
        rgb_zero, aux_zero = (out[:, :, :3] == 0).all(), (out[:, :, 3:] == 0).all()
        assert not (rgb_zero and aux_zero)
        assert channels == ([0, 1, 2] if rgb_zero else [3, 4] if aux_zero else [])
        dropped["rgb" if rgb_zero else "aux" if aux_zero else "none"] += 1
    assert 150 < dropped["none"] < 250 and dropped["rgb"] > 60 and dropped["aux"] > 60


def test_config_dropout_and_conditions(tmp_path):
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "out"), "CADET.INPUT.MODALITY_DROPOUT.PROB", "0.3",
                   "CADET.TEST.DROP_MODALITIES", '["thermal+event", "rgb"]', "CADET.TEST.CORRUPT", '["zero", "frozen"]')
    assert ModalityDropout.from_config(cfg).groups == [[0, 1, 2], [3, 4]]
    assert [c.name for c in conditions_from_config(cfg)] == [
        "-thermal+event (zero)", "-thermal+event (frozen)", "-rgb (zero)", "-rgb (frozen)"]
    cfg.CADET.INPUT.MODALITIES = ["rgb", "thermal"]
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = cfg.MODEL.PIXEL_MEAN[:4], cfg.MODEL.PIXEL_STD[:4]
    assert modality_slices(cfg)["thermal"] == slice(3, 4)
    with pytest.raises(ValueError, match="MODALITY_DROPOUT.GROUPS: 'thermal\\+event' names \\['event'\\]"):
        validate_cadet_config(cfg)
    cfg.CADET.INPUT.MODALITY_DROPOUT.GROUPS = ["rgb", "thermal"]
    with pytest.raises(ValueError, match="CADET.TEST.DROP_MODALITIES: 'thermal\\+event' names \\['event'\\]"):
        validate_cadet_config(cfg)
    cfg.CADET.TEST.DROP_MODALITIES = ["thermal"]
    cfg.CADET.TEST.CORRUPT = ["blur"]
    with pytest.raises(ValueError, match="CADET.TEST.CORRUPT entry = 'blur' is not allowed"):
        validate_cadet_config(cfg)


def test_mappers_apply_dropout_and_conditions(tiny_root, tmp_path):
    cfg = registered_cfg(tiny_root, str(tmp_path / "out"), "CADET.INPUT.MODALITY_DROPOUT.PROB", "1.0",
                         "CADET.INPUT.MODALITY_DROPOUT.GROUPS", '["thermal+event"]', "INPUT.RANDOM_FLIP", "none")
    record = {"file_name": os.path.join(tiny_root, "images", "img0001.npy"), "height": 48, "width": 64,
              "annotations": []}
    train_dict = MultiModalDatasetMapper(cfg, True)(dict(record))
    clean_dict = MultiModalDatasetMapper(cfg, False)(dict(record))
    train, clean = train_dict["image"], clean_dict["image"]
    assert (train[3:] == 0).all() and train[:3].abs().sum() > 0 and clean[3:].abs().sum() > 0
    assert train_dict["dropped_channels"] == [3, 4] and "dropped_channels" not in clean_dict
    frozen_file = os.path.join(tiny_root, "images", "img0000.npy")
    cond = Condition("rgb", "frozen", (0, 1, 2))
    test = MultiModalDatasetMapper(cfg, False, condition=cond, frozen_file=frozen_file)(dict(record))["image"]
    ref = MultiModalDatasetMapper(cfg, False)({"file_name": frozen_file})["image"]
    torch.testing.assert_close(test[:3], ref[:3])
    torch.testing.assert_close(test[3:], clean[3:])


def test_eval_reports_every_condition(tiny_root, tmp_path):
    from detectron2.modeling import build_model

    from cadet_d2.engine.trainer import CadetTrainer
    torch.manual_seed(0)
    out = str(tmp_path / "out")
    cfg = registered_cfg(tiny_root, out, "MODEL.BACKBONE.NAME", "build_dual_mit_fpn_backbone",
                         "CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                         "CADET.TEST.DROP_MODALITIES", '["rgb", "thermal+event"]', "CADET.TEST.CORRUPT", '["zero", "noise"]',
                         "DATASETS.TEST", '("synth_daytest1",)')
    model = build_model(cfg).eval()
    CadetTrainer.test(cfg, model)
    with open(os.path.join(out, "eval_metrics.json"), encoding="utf-8") as f:
        data = json.load(f)
    assert [c["name"] for c in data["conditions"]] == [
        "clean", "-rgb (zero)", "-rgb (noise)", "-thermal+event (zero)", "-thermal+event (noise)"]
    assert all(set(c["datasets"]) == {"synth_daytest1"} for c in data["conditions"])
    assert data["conditions"][0]["datasets"] == data["datasets"]

    def predictions(folder: str) -> list:
        with open(os.path.join(out, "inference", folder, "synth_daytest1", "coco_instances_results.json")) as f:
            return json.load(f)
    clean = predictions(".")  # the clean run writes under inference/synth_daytest1
    assert clean and predictions("drop_rgb_zero") != clean and predictions("drop_thermal_event_noise") != clean


def _fake_run(run_dir: str, day_ap: dict[str, float]) -> None:
    """A finished run as far as the runner can tell: model_final.pth, then per-condition metrics."""
    from cadet_d2.utils.io import atomic_write_json
    os.makedirs(run_dir, exist_ok=True)
    open(os.path.join(run_dir, "model_final.pth"), "wb").close()
    conditions = [{"name": c, "datasets": {"synth_daytest1": {"AP": ap, "AP50": None}}} for c, ap in day_ap.items()]
    atomic_write_json(os.path.join(run_dir, "eval_metrics.json"),
                      {"datasets": conditions[0]["datasets"], "conditions": conditions, "weights": ""})


def test_sensor_arms_commands_and_report(tmp_path):
    """Sensor-failure arms in the one study runner: plan, commands (dropout only in drop runs,
    each detector's own config, --eval-only for trained weights without metrics) and the report
    section from per-condition metrics."""
    from cadet_d2.study import load_study, make_plan
    from cadet_d2.study.plan import TRAIN_MODULE
    from cadet_d2.study.run import next_command, run_study
    from cadet_d2.study.sensor import report_lines

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\noutput: " + str(tmp_path / "out") + "\nseeds: 2\nopts: [SOLVER.MAX_ITER, 2]\n"
        "sensor_failure:\n  arms: {early: configs/demo.yaml, cssa: configs/demo/demo_cssa.yaml}\n  baseline: cssa\n"
        "  dropout: [CADET.INPUT.MODALITY_DROPOUT.PROB, 0.3]\n  eval: [CADET.TEST.DROP_MODALITIES, '[\"rgb\"]']\n")
    study = load_study(str(spec))
    plan = make_plan(study)
    assert study.seeds == [0, 1] and len(plan.runs) == 8 and {a.name for a in plan.arms} == {
        "early_nodrop", "early_drop", "cssa_nodrop", "cssa_drop"}
    run = {r.key: r for r in plan.runs}
    cmd = next_command(plan, run["cssa_drop/seed1"])
    assert cmd[:2] == ["-m", TRAIN_MODULE] and cmd[cmd.index("--config-file") + 1] == "configs/demo/demo_cssa.yaml"
    assert "CADET.INPUT.MODALITY_DROPOUT.PROB" in cmd and "--eval-only" not in cmd
    assert cmd[-4:] == ["SEED", "1", "OUTPUT_DIR", run["cssa_drop/seed1"].dir]
    assert "CADET.INPUT.MODALITY_DROPOUT.PROB" not in next_command(plan, run["cssa_nodrop/seed1"])
    # finished weights without metrics: evaluated, not retrained
    d = run["early_nodrop/seed0"].dir
    os.makedirs(d)
    open(os.path.join(d, "model_final.pth"), "wb").close()
    cmd = next_command(plan, run["early_nodrop/seed0"])
    assert "--eval-only" in cmd and cmd[-2:] == ["MODEL.WEIGHTS", os.path.join(d, "model_final.pth")]
    for seed, (clean, drop) in enumerate([(50.0, 10.0), (54.0, 14.0)]):
        _fake_run(run[f"early_nodrop/seed{seed}"].dir, {"clean": clean, "-rgb (zero)": drop})
        _fake_run(run[f"early_drop/seed{seed}"].dir, {"clean": clean - 1, "-rgb (zero)": drop + 20 + seed})
    lines = report_lines(plan)
    assert "4 of 8 runs finished" in lines[2]
    assert "| early | nodrop | 52.0 ± 2.8 | 12.0 ± 2.8 |" in lines
    assert "| early | -1.0 ± 0.0 | +20.5 ± 0.7 |" in lines  # drop - nodrop, paired by seed
    assert "| cssa | nodrop | – | – |" in lines
    assert "| cssa | drop | ref | ref |" in lines and "| early | nodrop | – | – |" in lines  # Δ vs baseline, none run
    assert any(line.startswith("**!!! WARNING: BASELINE MISSING: cssa_drop, cssa_nodrop (the baseline detector `cssa`)")
               for line in lines)
    printed: list[str] = []
    summary = run_study(study, dry_run=True, echo=printed.append)
    assert summary["done"] == 4 and sum("cssa_" in p and ": train: " in p for p in printed) == 4
    _fake_run(run["cssa_nodrop/seed0"].dir, {"clean": 40.0, "-rgb (zero)": 20.0})
    lines = report_lines(plan)
    assert "| early | nodrop | +10.0 (n=1) | -10.0 (n=1) |" in lines  # seed 0 only is paired, and says so
    assert any("BASELINE MISSING: cssa_drop (" in line for line in lines)  # cssa_nodrop has a run now
    spec.write_text(spec.read_text() + "  seed: 3\n")
    with pytest.raises(ValueError, match=r"sensor_failure: unknown key\(s\) \['seed'\]"):
        load_study(str(spec))


def test_sensor_failure_study_file_plans_valid_configs(tmp_path, monkeypatch):
    """configs/studies/sensor_failure.yaml: 5 detectors x nodrop/drop x 2 seeds, each run's
    command line loads and validates, with dropout only in the drop runs."""
    from cadet_d2.engine.setup import load_config
    from cadet_d2.study import load_study, make_plan

    monkeypatch.chdir(REPO)
    plan = make_plan(load_study(os.path.join("configs", "studies", "sensor_failure.yaml")))
    assert len(plan.runs) == 20 and plan.schedule_ok
    assert {r.arm.detector for r in plan.runs} == {"early", "frm_ffm", "cssa", "gaff", "late_proben"}
    for run in plan.runs[::3]:
        argv = plan.command(run)
        cfg = load_config(argv[3], argv[4:])
        assert argv[3] == plan.study.sensor.arms[run.arm.detector] and cfg.SEED == run.seed
        assert cfg.CADET.INPUT.MODALITY_DROPOUT.PROB == (0.3 if run.arm.training == "drop" else 0.0), run.key
        assert list(cfg.CADET.TEST.DROP_MODALITIES) == ["rgb", "thermal", "event", "thermal+event"]


def test_sensor_failure_study_runs_for_real(tmp_path):
    """tools/sensor_failure.py run: one tiny detector trained without and with modality dropout
    (MODE noise, every image), 3 iterations each; the end-of-training evaluation writes the clean
    and the frozen-RGB condition; the report is written from them."""
    root = make_tiny_root(str(tmp_path / "data"))
    out = tmp_path / "out"
    tiny = ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", "CADET.DATA.ROOT", root, "CADET.DATA.NAME", "synth",
            "DATASETS.TRAIN", "('synth_train',)", "INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "64",
            "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "64", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "100"]
    study = {"name": "tiny_sensor", "output": str(out), "seeds": 1, "opts": tiny, "env": {"OMP_NUM_THREADS": "1"},
             "sensor_failure": {
                 "arms": {"tiny": "configs/Base-CADET.yaml"},
                 "dropout": ["CADET.INPUT.MODALITY_DROPOUT.PROB", "1.0", "CADET.INPUT.MODALITY_DROPOUT.GROUPS",
                             '["rgb", "thermal+event"]', "CADET.INPUT.MODALITY_DROPOUT.MODE", "noise"],
                 "eval": ["DATASETS.TEST", "('synth_daytest1',)", "CADET.TEST.DROP_MODALITIES", '["rgb"]',
                          "CADET.TEST.CORRUPT", '["frozen"]']}}
    path = tmp_path / "sensor.yaml"
    path.write_text(yaml.safe_dump(study))
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sensor_failure.py"), "run", str(path)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for training in ("nodrop", "drop"):
        d = out / f"tiny_{training}" / "seed0"
        metrics = json.loads((d / "eval_metrics.json").read_text())
        assert [c["name"] for c in metrics["conditions"]] == ["clean", "-rgb (frozen)"]
        assert all(isinstance(c["datasets"]["synth_daytest1"]["AP"], float) for c in metrics["conditions"])
        status = json.loads((d / "status.json").read_text())
        assert status["state"] == "done" and "--eval-only" not in status["command"]  # evaluated at the end of training
        assert (d / "inference" / "drop_rgb_frozen" / "synth_daytest1" / "coco_instances_results.json").is_file()
        mode = yaml.safe_load((d / "config.yaml").read_text())["CADET"]["INPUT"]["MODALITY_DROPOUT"]
        assert (mode["MODE"], mode["PROB"]) == (("noise", 1.0) if training == "drop" else ("zero", 0.0)), mode
    md = (out / "report" / "report.md").read_text()
    assert "## sensor failure" in md and "2 of 2 runs finished" in md and "| clean | -rgb (frozen) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| tiny | drop |"))
    assert re.fullmatch(r"\| tiny \| drop \| \d+\.\d \| \d+\.\d \|", row), row


def test_no_detections_count_as_zero_ap():
    from cadet_d2.evaluation.coco import no_detections_as_zero
    nan = float("nan")
    out = no_detections_as_zero({"a": {"AP": nan, "AP50": nan}, "b": {"AP": 12.0, "APl": nan}})
    assert out["a"] == {"AP": 0.0, "AP50": 0.0}
    assert out["b"]["AP"] == 12.0 and math.isnan(out["b"]["APl"])  # a metric without objects stays NaN
