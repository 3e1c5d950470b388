"""Every YAML under configs/ builds the model it describes and runs on a tiny input."""
from __future__ import annotations

import glob
import os

import pytest
import torch
from detectron2.modeling import build_model

from cadet_d2.layout import modality_slices
from cadet_d2.engine import load_config
from cadet_d2.modeling import DualStreamMiT, LateFusionRCNN, SingleStreamMiT
from cadet_d2.modeling.fusion import FUSION_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                 if "/studies/" not in p)


def test_configs_found_and_output_dirs_unique():
    assert len(CONFIGS) >= 30
    dirs = [load_config(p).OUTPUT_DIR for p in CONFIGS if not p.endswith("Base-CADET.yaml")]
    assert len(dirs) == len(set(dirs)), "two configs write to the same OUTPUT_DIR"


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_builds_and_runs(path):
    # The MiT size is checked at full size by the baselines (one per size); the other arms are
    # built at b0 to keep the suite short: their fusion and modality wiring is what they test.
    size = [] if "/baselines/" in path else ["CADET.BACKBONE.SIZE", "b0"]
    # configs/datasets/ name a local mit_b1.pth that a checkout does not have: random init here.
    cfg = load_config(path, ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.PRETRAINED", "", *size])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    slices = modality_slices(cfg)
    n_in = sum(s.stop - s.start for s in slices.values())
    if cfg.MODEL.META_ARCHITECTURE == "LateFusionRCNN":  # one single-stream detector per branch
        assert isinstance(model, LateFusionRCNN) and len(model.branches) == len(cfg.CADET.LATE.BRANCHES)
        assert sorted(c for chans in model.channels.values() for c in chans) == list(range(n_in))
        for branch in model.branches.values():
            assert isinstance(branch.backbone.bottom_up, SingleStreamMiT)
            assert branch.backbone.bottom_up.stream.size == cfg.CADET.BACKBONE.SIZE
        with torch.no_grad():
            out = model([{"image": torch.rand(n_in, 64, 80) * 255, "height": 64, "width": 80}])
        assert out[0]["instances"].image_size == (64, 80)
        return
    bottom_up = model.backbone.bottom_up
    dual = cfg.MODEL.BACKBONE.NAME == "build_dual_mit_fpn_backbone" and "rgb" in slices and len(slices) > 1
    assert isinstance(bottom_up, DualStreamMiT if dual else SingleStreamMiT)
    if dual:
        f = cfg.CADET.FUSION
        for stage, module in zip((1, 2, 3, 4), bottom_up.fusions):
            expected = f.NAME if stage in f.STAGES else f.DEFAULT
            if expected == "hybrid":
                expected = f.HYBRID.EARLY if stage in f.HYBRID.EARLY_STAGES else f.HYBRID.LATE
            assert type(module) is FUSION_REGISTRY.get(expected)
    assert bottom_up.stream.size == cfg.CADET.BACKBONE.SIZE if not dual else bottom_up.rgb_stream.size == cfg.CADET.BACKBONE.SIZE
    with torch.no_grad():
        out = model([{"image": torch.rand(n_in, 64, 80) * 255, "height": 64, "width": 80}])
    assert out[0]["instances"].image_size == (64, 80)
