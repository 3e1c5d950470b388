"""Every built-in fusion module trains a few iterations through CadetTrainer on tiny data,
and tools/benchmark.py measures a tiny model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from cadet_d2.engine import CadetTrainer
from cadet_d2.data import register_from_config
from conftest import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", ["frm_ffm", "cssa", "gaff", "concat", "cssa_learnable", "cssa_soft"])
def test_fusion_module_trains(tiny_root, tmp_path, name):
    cfg = tiny_cfg(tiny_root, str(tmp_path), "CADET.FUSION.NAME", name, "CADET.FUSION.DEFAULT", "sum",
                   "CADET.FUSION.STAGES", "[2, 4]", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "3",
                   "SOLVER.BASE_LR", "0.01")
    register_from_config(cfg)
    trainer = CadetTrainer(cfg)
    fusions = trainer.model.backbone.bottom_up.fusions
    assert [type(f).__name__ for f in fusions].count(type(fusions[1]).__name__) == 2  # stages 2 and 4
    before = {k: v.clone() for k, v in fusions[1].state_dict().items() if v.dtype.is_floating_point}
    trainer.train()
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)
    after = fusions[1].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), f"{name}: fusion weights did not change"
    if name == "cssa_learnable":  # the learned threshold moved and was logged at iteration 0
        assert "threshold_logit" in before and not torch.equal(before["threshold_logit"], after["threshold_logit"])
        assert trainer.storage.history("fusion/stage2/threshold").values()[0][0] == pytest.approx(0.5)


@pytest.mark.parametrize("optimizer", ["SGD", "ADAMW"])
def test_learned_threshold_has_its_own_learning_rate(tiny_root, tmp_path, optimizer):
    cfg = tiny_cfg(tiny_root, str(tmp_path), "CADET.FUSION.NAME", "cssa_learnable", "CADET.FUSION.STAGES", "[2, 4]",
                   "CADET.FUSION.DEFAULT", "sum", "CADET.FUSION.CSSA.THRESHOLD_LR_MULT", "50.0",
                   "CADET.SOLVER.OPTIMIZER", optimizer, "SOLVER.BASE_LR", "0.002", "SOLVER.BIAS_LR_FACTOR", "2.0")
    model = CadetTrainer.build_model(cfg)
    opt = CadetTrainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.SGD if optimizer == "SGD" else torch.optim.AdamW)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    thresholds = [p for n, p in model.named_parameters() if n.endswith(".threshold_logit")]
    assert len(thresholds) == 2 and all(lr_of[id(p)] == pytest.approx(0.1) for p in thresholds)
    biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
    assert biases and all(lr_of[id(p)] == pytest.approx(0.004) for p in biases)  # Detectron2's groups kept
    others = [p for n, p in model.named_parameters() if n.endswith(".weight")]
    assert all(lr_of[id(p)] == pytest.approx(0.002) for p in others)
    if optimizer == "SGD":
        assert all(g["momentum"] == cfg.SOLVER.MOMENTUM for g in opt.param_groups)
    with pytest.raises(ValueError, match="THRESHOLD_LR_MULT"):
        tiny_cfg(tiny_root, str(tmp_path), "CADET.FUSION.CSSA.THRESHOLD_LR_MULT", "0.0")


def test_hybrid_trains_cssa_early_gaff_late(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, str(tmp_path), "CADET.FUSION.NAME", "hybrid", "CADET.FUSION.HYBRID.EARLY_STAGES", "[1]",
                   "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "2")
    register_from_config(cfg)
    trainer = CadetTrainer(cfg)
    assert [type(f).__name__ for f in trainer.model.backbone.bottom_up.fusions] == [
        "CSSAFusion", "GAFFFusion", "GAFFFusion", "GAFFFusion"]
    trainer.train()
    assert len(trainer.storage.history("total_loss").values()) == 2


def test_benchmark_tool_reports_speed_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "tools/benchmark.py", "--config-file", "configs/demo/demo_cssa.yaml",
                        "--iters", "2", "--warmup", "1", "--batch", "1", "--size", "64", "96", "--json", str(out),
                        "--mode", "infer"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "infer" and result["fusion"] == "cssa" and result["height"] == 64
    assert result["images_per_s"] > 0 and result["peak_memory_mb"] > 100
