"""The memory planner: arithmetic-free counting equals the real count, its fit predicts a larger
batch, and its plan and command line."""
from __future__ import annotations

import json

import pytest
import torch

from cadet_d2.utils.memory import SkipArithmetic
from cadet_d2.bench.planner import GIB, MemoryModel, budget_bytes, fit_memory_model, measure_step_memory, plan, setting_cfg
from conftest import tiny_cfg

FAST = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "CADET.FUSION.NAME", "frm_ffm"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def cfg(tmp_path):
    return tiny_cfg(str(tmp_path), str(tmp_path / "o"), *FAST)


def test_skipping_the_arithmetic_counts_the_same_bytes(cfg):
    scfg = setting_cfg(cfg, "fp32+ckpt")  # checkpointing: the recomputation is skipped too
    real = measure_step_memory(scfg, 1, 64, 96, compute=True)
    fake = measure_step_memory(scfg, 1, 64, 96, compute=False)
    assert fake["peak_bytes"] == real["peak_bytes"] and fake["state_bytes"] == real["state_bytes"]
    assert real["peak_bytes"] > real["state_bytes"] > real["grad_bytes"] > 0


def test_skip_arithmetic_skips_matrix_products_with_exact_shapes():
    a, b = torch.randn(64, 32), torch.randn(32, 48)
    with SkipArithmetic() as mode:
        c = a @ b
        d = torch.nn.functional.conv2d(torch.randn(1, 3, 9, 11), torch.randn(4, 3, 3, 3), stride=2)
        e = a + 1  # not skipped
    assert mode.skipped == 2 and c.shape == (64, 48) and d.shape == (1, 4, 4, 5)
    assert not torch.allclose(c, a @ b) and torch.equal(e, a + 1)


def test_prediction_for_a_larger_batch_is_within_10_percent(cfg):
    scfg = setting_cfg(cfg, "fp32")
    small = [measure_step_memory(scfg, b, 64, 96, compute=True) for b in (1, 2)]
    target = [measure_step_memory(scfg, b, 96, 128, compute=True) for b in (1, 2, 4)]
    measured = target[2]["peak_bytes"]
    same_size = fit_memory_model("fp32", target[:2])
    from_small = fit_memory_model("fp32", small, target[0])  # fixed part at 64 x 96, batch 1 at 96 x 128
    for m in (same_size, from_small):
        assert m.per_image_bytes > 0.1 * m.fixed_bytes > 0
        assert abs(m.predict(4) - measured) <= 0.10 * measured, (m.setting, m.predict(4), measured)
        # the per-image part too, not only the weights and optimizer state that dominate a tiny model
        act = measured - target[2]["state_bytes"]
        assert abs(m.predict(4) - target[2]["state_bytes"] - act) <= 0.15 * act
    assert len(from_small.points) == 3


def test_fit_needs_two_batch_sizes():
    point = {"batch": 1, "peak_bytes": 10, "state_bytes": 5, "grad_bytes": 2}
    with pytest.raises(ValueError, match="two measurements"):
        fit_memory_model("fp32", [point, dict(point)])
    m = fit_memory_model("fp32", [point, {**point, "batch": 3, "peak_bytes": 16}])
    assert (m.fixed_bytes, m.per_image_bytes) == (7, 3)


def test_plan_picks_the_cheapest_setting_that_fits():
    models = {"fp32": MemoryModel("fp32", 4 * GIB, 4 * GIB, GIB, 3 * GIB),
              "bf16": MemoryModel("bf16", 4 * GIB, 2 * GIB, GIB, 3 * GIB)}
    p = plan(models, 40, effective_batch=16)
    assert budget_bytes(40) == pytest.approx((40 * 0.9 - 1.5) * GIB)
    assert p["max_ims_per_gpu"] == {"fp32": 7, "bf16": 15}  # (34.5 - 4) / 4, (34.5 - 4) / 2
    # fp32: 16 per GPU needs micro-batches of 4 (accum 4: 4 + 1 + 16 = 21 GiB); bf16: 8 x 2 (4 + 1 + 16)
    assert [(f["setting"], f["ims_per_batch"], f["accum_steps"]) for f in p["fits"]] == [("fp32", 4, 4), ("bf16", 8, 2)]
    timed = plan(models, 40, 16, costs={"fp32": 1.0, "bf16": 0.5, "accum": 1.1})
    assert timed["fits"][0]["setting"] == "bf16" and timed["fits"][0]["step_time_ratio"] == pytest.approx(0.55)
    two = plan(models, 40, 16, gpus=2)  # DDP's buckets: one more copy of the gradients per GPU
    assert two["fits"][0]["ims_per_gpu"] == 4 and two["fits"][0]["ims_per_batch"] == 8
    assert plan(models, 8, 16)["fits"] == [] and plan(models, 8, 16)["max_ims_per_gpu"]["fp32"] == 0
    with pytest.raises(ValueError, match="does not divide"):
        plan(models, 40, 15, gpus=2)


def test_unknown_setting_is_refused(cfg):
    with pytest.raises(ValueError, match="unknown setting 'int4'"):
        setting_cfg(cfg, "int4")


def _cli():
    import importlib.util
    import os

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("benchmark_cli", os.path.join(here, "tools", "benchmark.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


TINY = ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"]


def test_plan_command_line(tmp_path, capsys):
    benchmark_tool = _cli()
    out = tmp_path / "plan.json"
    r = benchmark_tool.main(["--config-file", "configs/Base-CADET.yaml", "--mode", "plan", "--gpu-memory", "4",
                             "--effective-batch", "4", "--settings", "fp32", "--size", "64", "96", "--time-rounds", "1",
                             "--json", str(out), *TINY, *FAST])
    err = capsys.readouterr().err
    assert set(r["models"]) == {"fp32"} and json.loads(out.read_text())["plan"]["effective_batch"] == 4
    assert "largest SOLVER.IMS_PER_BATCH per GPU" in err and "cannot see" in err
    fits = r["plan"]["fits"]
    assert fits and fits[0]["ims_per_gpu"] * fits[0]["accum_steps"] == 4 and fits[0]["predicted_gib"] < 1
    assert r["costs"]["fp32"] == 1.0 and r["costs"]["accum"] > 0 and fits[0]["step_time_ratio"] > 0  # measured
    assert "(measured)" in err
    again = benchmark_tool.main(["--config-file", "configs/Base-CADET.yaml", "--mode", "plan", "--gpu-memory", "80",
                                 "--settings", "fp32", "--from-json", str(out), *TINY])  # no measuring
    assert again["models"] == r["models"] and again["plan"]["max_ims_per_gpu"]["fp32"] > r["plan"]["max_ims_per_gpu"]["fp32"]
    with pytest.raises(ValueError, match="no memory model for setting"):
        benchmark_tool.main(["--config-file", "configs/Base-CADET.yaml", "--mode", "plan", "--gpu-memory", "80",
                             "--settings", "bf16", "--from-json", str(out), *TINY])
    with pytest.raises(SystemExit):
        benchmark_tool.main(["--config-file", "configs/Base-CADET.yaml", "--mode", "plan"])


def test_settings_measure_the_attention_kernel_a_gpu_runs(cfg):
    # the plan is for GPUs: "auto" resolves as on CUDA even where the planner runs on a CPU
    assert cfg.MODEL.DEVICE == "cpu" and cfg.CADET.BACKBONE.ATTENTION == "auto"
    assert setting_cfg(cfg, "bf16").CADET.BACKBONE.ATTENTION == "fused"
    math = cfg.clone()
    math.defrost()
    math.CADET.BACKBONE.ATTENTION = "math"
    assert setting_cfg(math, "fp32").CADET.BACKBONE.ATTENTION == "math"
