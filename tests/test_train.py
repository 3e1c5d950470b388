"""End to end: tools/train_net.py trains a tiny model, then --eval-only writes test/day/night metrics."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from cadet_d2.evaluation import METRICS
from cadet_d2.utils.machine import machine_label

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
    "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "100",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
]


def train_net(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_train_then_eval_only(tiny_root, tmp_path):
    out = str(tmp_path / "run")
    cfg = ["--config-file", "configs/Base-CADET.yaml"]
    r = train_net(*cfg, *TINY, "CADET.DATA.ROOT", tiny_root, "CADET.FUSION.NAME", "sum",
                  "CADET.FUSION.DEFAULT", "sum", "OUTPUT_DIR", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert f"[cadet] machine: {machine_label()}" in open(os.path.join(out, "log.txt")).read()
    os.remove(os.path.join(out, "eval_metrics.json"))  # written by the end-of-training evaluation

    r = train_net(*cfg, "--eval-only", *TINY, "CADET.DATA.ROOT", tiny_root, "CADET.FUSION.NAME", "sum",
                  "CADET.FUSION.DEFAULT", "sum", "OUTPUT_DIR", out, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"))
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["weights"].endswith("model_final.pth") and metrics["machine"] == machine_label()
    assert set(metrics["datasets"]) == {"synth_test", "synth_daytest1", "synth_nighttest1"}
    for m in metrics["datasets"].values():
        assert set(METRICS) <= set(m)
    assert "| synth_nighttest1 |" in r.stdout + r.stderr  # the table is in the log

    # a model that detects nothing (no score passes 1.01) scores AP 0, said in the log, never NaN
    r = train_net(*cfg, "--eval-only", *TINY, "CADET.DATA.ROOT", tiny_root, "CADET.FUSION.NAME", "sum",
                  "CADET.FUSION.DEFAULT", "sum", "OUTPUT_DIR", out, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                  "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.01")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert all(m[k] == 0.0 for m in metrics["datasets"].values() for k in METRICS), metrics
    assert "synth_nighttest1: the model made no detection: COCO AP counted as 0" in r.stdout + r.stderr

    # weights of another model (sum fusion has no parameters, CSSA has): stop, no metrics written
    os.remove(os.path.join(out, "eval_metrics.json"))
    r = train_net(*cfg, "--eval-only", *TINY, "CADET.DATA.ROOT", tiny_root, "CADET.FUSION.NAME", "cssa",
                  "CADET.FUSION.DEFAULT", "cssa", "OUTPUT_DIR", out, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"))
    assert r.returncode != 0 and "does not fit the model of this config" in r.stderr, r.stderr[-3000:]
    assert "model keys not in the file (backbone.bottom_up.fusions." in r.stderr
    assert not os.path.exists(os.path.join(out, "eval_metrics.json"))


@pytest.mark.parametrize("opts, needle", [
    (["CADET.FUSION.NAMEE", "sum"], "unknown config key 'CADET.FUSION.NAMEE'; did you mean CADET.FUSION.NAME"),
    (["CADET.INPUT.MODALITIES", "['rgb', 'thermel']"], "'thermel' is not allowed"),
    (["MODEL.PIXEL_MEAN", "[1.0, 2.0, 3.0]"], "MODEL.PIXEL_MEAN has 3 entries but the input has 5 channels"),
    (["CADET.FUSION.STAGES", "[0, 2]"], "stages are 1, 2, 3, 4"),
    (["CADET.FUSION.CSSA.THRESHOLD", "1.5"], "must lie in [0, 1]"),
    (["CADET.FUSION.NAME", "nosuch"], "Unknown fusion module 'nosuch'. Registered: "),
    (["CADET.FUSION.STAGES", "[1, 1]"], "CADET.FUSION.STAGES = [1, 1] names a stage twice"),
    (["SOLVER.BASE_LR"], "config overrides come as KEY VALUE pairs, but 3 words were given (keys read: "
                         "['MODEL.DEVICE', 'SOLVER.BASE_LR'])"),
    (["CADET.FUSION.NAME", "hybrid", "CADET.FUSION.HYBRID.EARLY_STAGES", "[5]"],
     "CADET.FUSION.HYBRID.EARLY_STAGES entry 5 is not a stage"),
    (["CADET.FUSION.NAME", "gaff", "CADET.FUSION.GAFF.SE_REDUCTION", "0"],
     "CADET.FUSION.GAFF.SE_REDUCTION = 0 must be an integer >= 1"),
    (["CADET.FUSION.FRM_FFM.REDUCTION", "0"], "CADET.FUSION.FRM_FFM.REDUCTION = 0 must be an integer >= 1"),
    (["CADET.FUSION.NAME", "cssa_learnable", "CADET.FUSION.CSSA.TEMPERATURE", "-1.0"],
     "CADET.FUSION.CSSA.TEMPERATURE = -1.0 must be > 0"),
    (["CADET.BACKBONE.DROP_PATH_RATE", "1.5"], "CADET.BACKBONE.DROP_PATH_RATE = 1.5 must lie in [0, 1)"),
])
def test_config_mistakes_stop_with_a_clear_message(tiny_root, tmp_path, opts, needle):
    from cadet_d2.engine import load_config
    from detectron2.modeling import build_model

    with pytest.raises((KeyError, ValueError)) as e:
        cfg = load_config(os.path.join(REPO, "configs/Base-CADET.yaml"), ["MODEL.DEVICE", "cpu", *opts])
        build_model(cfg)
    assert needle in str(e.value)


def test_config_typo_in_yaml_names_the_file(tmp_path):
    from cadet_d2.engine import load_config

    p = tmp_path / "typo.yaml"
    p.write_text(f"_BASE_: {REPO}/configs/Base-CADET.yaml\nCADET:\n  BACKBONE:\n    SIZ: b1\n")
    with pytest.raises(KeyError, match=f"{p}: unknown config key 'CADET.BACKBONE.SIZ'; did you mean CADET.BACKBONE.SIZE"):
        load_config(str(p))


def test_user_fusion_example_trains_from_yaml(tiny_root, tmp_path):
    """examples/my_fusion.py, named only in examples/my_fusion.yaml, trains through train_net."""
    out = str(tmp_path / "user")
    r = train_net("--config-file", "examples/my_fusion.yaml", *TINY, "SOLVER.MAX_ITER", "1",
                  "CADET.DATA.ROOT", tiny_root, "OUTPUT_DIR", out, "DATASETS.TEST", "()")
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    gates = [k for k in state if k.endswith(".gate")]
    assert sorted(gates) == ["backbone.bottom_up.fusions.2.gate", "backbone.bottom_up.fusions.3.gate"]


def test_single_test_set_metrics_keep_the_dataset_name(tiny_root, tmp_path):
    """Detectron2 flattens the results of a single test set; the metrics file must not."""
    out = str(tmp_path / "one")
    r = train_net("--config-file", "configs/Base-CADET.yaml", *TINY, "SOLVER.MAX_ITER", "1", "CADET.DATA.ROOT",
                  tiny_root, "CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum", "OUTPUT_DIR", out,
                  "DATASETS.TEST", "('synth_nighttest1',)")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)["datasets"]
    assert list(metrics) == ["synth_nighttest1"] and "AP" in metrics["synth_nighttest1"]


def test_base_that_does_not_exist_names_the_config_and_the_base(tmp_path):
    from cadet_d2.engine import load_config

    p = tmp_path / "child.yaml"
    p.write_text("_BASE_: Nope.yaml\n")
    with pytest.raises(FileNotFoundError, match=f"{p}: its _BASE_ chain names {tmp_path / 'Nope.yaml'}, which does"):
        load_config(str(p))


def test_eval_only_needs_weights(tmp_path):
    """--eval-only without MODEL.WEIGHTS (or --resume with a checkpoint, or CADET.LATE.WEIGHTS)
    would score a random model and write its metrics file: it stops, saying what to add."""
    from cadet_d2.engine import load_config
    from cadet_d2.engine.checkpoint import CadetCheckpointer
    from cadet_d2.engine.train import check_eval_weights

    out = tmp_path / "run"
    out.mkdir()
    cfg = load_config(os.path.join(REPO, "configs/Base-CADET.yaml"), ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out)])
    ckpt = CadetCheckpointer(torch.nn.Linear(1, 1), save_dir=str(out))
    with pytest.raises(ValueError, match=r"--eval-only has no weights to evaluate \(MODEL.WEIGHTS is empty\): add "):
        check_eval_weights(cfg, ckpt, resume=False)
    with pytest.raises(ValueError, match=f"--resume found no checkpoint in {out}"):
        check_eval_weights(cfg, ckpt, resume=True)
    (out / "model_0000001.pth").write_bytes(b"")
    check_eval_weights(cfg, ckpt, resume=True)  # a checkpoint to resume from
    with pytest.raises(ValueError):
        check_eval_weights(cfg, ckpt, resume=False)  # a checkpoint is used with --resume only
    cfg.MODEL.WEIGHTS = "w.pth"
    check_eval_weights(cfg, ckpt, resume=False)


def test_weights_path_that_is_missing_or_a_folder_is_named(tmp_path):
    from cadet_d2.engine.checkpoint import CadetCheckpointer

    ckpt = CadetCheckpointer(torch.nn.Linear(1, 1), save_dir=str(tmp_path / "out"))
    with pytest.raises(IsADirectoryError, match=f"MODEL.WEIGHTS {tmp_path} is a folder: name the weights file, e.g. "
                                                f"{tmp_path / 'model_final.pth'}"):
        ckpt.resume_or_load(str(tmp_path), resume=False)
    with pytest.raises(FileNotFoundError, match=f"MODEL.WEIGHTS {tmp_path / 'nope.pth'}: no such file"):
        ckpt.resume_or_load(str(tmp_path / "nope.pth"), resume=True)  # nothing to resume: MODEL.WEIGHTS


@pytest.mark.parametrize("flags, opts, needle", [
    (["--num-gpus", "2"], ["SOLVER.IMS_PER_BATCH", "3"], "SOLVER.IMS_PER_BATCH = 3 is not divisible by the 2 processes"),
    (["--num-gpus", "4"], ["SOLVER.IMS_PER_BATCH", "2"], "SOLVER.IMS_PER_BATCH = 2 is not divisible by the 4 processes"),
    pytest.param([], ["MODEL.DEVICE", "cuda"], "MODEL.DEVICE 'cuda' but CUDA is not available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")),
])
def test_cli_stops_before_spawning(tmp_path, flags, opts, needle):
    """A batch that does not split over the processes, or a CUDA device on a machine without
    one, stops in the launching process (before any worker starts, nothing written)."""
    from cadet_d2.engine.train import cli

    out = tmp_path / "run"
    with pytest.raises((ValueError, RuntimeError), match=needle):
        cli([*flags, "--config-file", os.path.join(REPO, "configs/Base-CADET.yaml"), "MODEL.DEVICE", "cpu", *opts,
             "OUTPUT_DIR", str(out)], main_func=print)
    assert not out.exists()


def test_cli_needs_a_config_file(capsys):
    from cadet_d2.engine.train import cli

    with pytest.raises(SystemExit) as info:
        cli(["MODEL.DEVICE", "cpu"], main_func=print)
    assert info.value.code == 2 and "--config-file is required" in capsys.readouterr().err


def test_metrics_record_the_weights_and_never_nan(tiny_root, tmp_path):
    """The metrics file names the weights it evaluated and the iterations behind them (training:
    model_final.pth; --eval-only --resume: the checkpoint loaded); a model that detects nothing
    scores AP 0 in Detectron2's metrics.json too, at the mid-training and the final evaluation."""
    out = str(tmp_path / "run")
    opts = [*TINY, "SOLVER.MAX_ITER", "2", "CADET.DATA.ROOT", tiny_root, "CADET.FUSION.NAME", "sum",
            "CADET.FUSION.DEFAULT", "sum", "OUTPUT_DIR", out, "DATASETS.TEST", "('synth_nighttest1',)"]
    r = train_net("--config-file", "configs/Base-CADET.yaml", *opts, "MODEL.WEIGHTS", "", "TEST.EVAL_PERIOD", "1",
                  "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.01")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["weights"] == os.path.join(out, "model_final.pth") and metrics["trained_iterations"] == 2
    log = r.stdout + r.stderr  # the mid-training evaluation names that iteration's checkpoint (not final)
    assert f"metrics of {os.path.join(out, 'model_0000000.pth')} written to" in log
    assert f"metrics of {os.path.join(out, 'model_final.pth')} written to" in log
    with open(os.path.join(out, "metrics.json")) as f:
        evals = [rec for rec in map(json.loads, f) if "bbox/AP" in rec]
    assert [rec["iteration"] for rec in evals] == [0, 2]  # Detectron2's count: mid-training, final
    assert all(rec[f"bbox/{k}"] == 0.0 for rec in evals for k in METRICS), evals

    os.remove(os.path.join(out, "eval_metrics.json"))
    r = train_net("--config-file", "configs/Base-CADET.yaml", "--eval-only", "--resume", *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["weights"] == os.path.join(out, "model_final.pth") and metrics["trained_iterations"] == 2

    # --resume past SOLVER.MAX_ITER trains nothing: said, and the metrics keep the checkpoint's count
    r = train_net("--config-file", "configs/Base-CADET.yaml", "--resume", *opts, "SOLVER.MAX_ITER", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the checkpoint is after 2 iterations, SOLVER.MAX_ITER is 1: nothing left to train" in r.stdout + r.stderr
    with open(os.path.join(out, "eval_metrics.json")) as f:
        assert json.load(f)["trained_iterations"] == 2
