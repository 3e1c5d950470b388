"""cssa_learnable, cssa_soft and hybrid: forward formulas, the learned threshold's gradient and
logging, and hybrid's stage split (CPU, tiny tensors)."""
from __future__ import annotations

import pytest
import torch
from detectron2.utils.events import EventStorage

from cadet_d2.config import validate_cadet_config
from cadet_d2.modeling.fusion import cssa, cssa_variants, gaff
from conftest import tiny_cfg
from test_fusion import build, inputs

C = 16


def _copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    dst.load_state_dict(src.state_dict(), strict=False)


@pytest.mark.parametrize("threshold,rescale", [(0.5, False), (0.3, True), (0.7, False)])
def test_learnable_forward_equals_cssa_at_its_threshold(threshold, rescale):
    overrides = {"CSSA.THRESHOLD": threshold, "CSSA.RESCALE": rescale}
    ref = build("cssa", C, 1, overrides)
    module = build("cssa_learnable", C, 1, overrides)
    _copy_weights(ref, module)
    assert module.learned_threshold == pytest.approx(threshold, abs=1e-6)
    rgb, aux = inputs(C)
    torch.testing.assert_close(module(rgb, aux).fused, ref(rgb, aux).fused)
    assert [float(r) for r in module.last_switch_rates] == [float(r) for r in ref.last_switch_rates]


@pytest.mark.parametrize("target", ["rgb", "aux"])
def test_learnable_threshold_trains_and_is_logged(target):
    module = build("cssa_learnable", C, 3, {"CSSA.THRESHOLD": 0.5, "CSSA.TEMPERATURE": 0.1})
    rgb, aux = inputs(C)
    with EventStorage(0) as storage:
        module(rgb, aux)
        assert storage.latest()["fusion/stage3/threshold"][0] == pytest.approx(0.5)
    # A loss on R_s alone: pulling it to R asks for fewer switched channels (tau falls), pulling
    # it to X for more (tau rises). Only the threshold is trained.
    goal = rgb if target == "rgb" else aux
    opt = torch.optim.SGD([module.threshold_logit], lr=1.0)
    before = module.learned_threshold
    for step in range(20):
        opt.zero_grad()
        ((module.switch(rgb, aux)[0] - goal) ** 2).mean().backward()
        if step == 0:  # (later it may reach an optimum: no channel, or every channel, switched)
            assert module.threshold_logit.grad.abs() > 0
        opt.step()
    assert (module.learned_threshold < before) if target == "rgb" else (module.learned_threshold > before)


def test_soft_gate_formula():
    module = build("cssa_soft", C, 2, {})
    rgb, aux = inputs(C)
    out = module(rgb, aux)
    w_r, _ = module.eca_rgb(rgb)
    w_x, _ = module.eca_aux(aux)
    g_r, g_x = (1 - w_r) * w_x, (1 - w_x) * w_r
    rgb_s, aux_s = (1 - g_r) * rgb + g_r * aux, (1 - g_x) * aux + g_x * rgb
    s = torch.cat([torch.cat([rgb_s, aux_s], 1).mean(1, keepdim=True), torch.cat([rgb_s, aux_s], 1).amax(1, keepdim=True)], 1)
    a = torch.sigmoid(module.spatial(s))
    torch.testing.assert_close(out.fused, a * rgb_s + (1 - a) * aux_s)
    assert 0 < float(module.last_switch_rates[0]) < 1
    torch.testing.assert_close(module.last_switch_rates[0], g_r.mean())


def test_hybrid_builds_early_and_late_modules():
    early = build("hybrid", C, 2, {"HYBRID.EARLY_STAGES": "[1, 2]"})
    late = build("hybrid", C, 3, {"HYBRID.EARLY_STAGES": "[1, 2]"})
    assert type(early) is cssa.CSSAFusion and type(late) is gaff.GAFFFusion
    swapped = build("hybrid", C, 3, {"HYBRID.EARLY_STAGES": "[1, 2, 3]", "HYBRID.EARLY": "cssa_learnable"})
    assert type(swapped) is cssa_variants.LearnableThresholdCSSA
    # options of the inner module still apply
    assert build("hybrid", C, 1, {"CSSA.THRESHOLD": 0.2}).threshold == 0.2


def test_hybrid_cannot_nest(tmp_path):
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "out"))
    validate_cadet_config(cfg)
    cfg.CADET.FUSION.HYBRID.LATE = "hybrid"
    with pytest.raises(ValueError, match="HYBRID.LATE cannot be 'hybrid'"):
        validate_cadet_config(cfg)
