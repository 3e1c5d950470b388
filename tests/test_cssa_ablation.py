"""CSSA component ablation (CADET.FUSION.CSSA.ECA / SWITCH / SPATIAL): parameter counts against
closed forms, and the forward pass of each reduced module on hand-sized tensors."""
from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.utils.events import EventStorage

from cadet_d2.config import add_cadet_config, validate_cadet_config
from cadet_d2.modeling.fusion import build_fusion, check_fusion_config, cssa, cssa_variants
from cadet_d2.utils.params import count_params, fusion_param_counts

B, H, W = 2, 5, 6
ECA_KERNEL = {8: 3, 32: 3, 64: 3, 160: 5, 320: 5, 512: 5}  # k = int((log2 C + 1) / 2), made odd
SPATIAL_PARAMS = 2 * 7 * 7 + 1  # 7x7 conv, 2 -> 1, with bias


def _cfg(**opts):
    cfg = add_cadet_config(get_cfg())
    cfg.merge_from_list([x for k, v in opts.items() for x in (f"CADET.FUSION.CSSA.{k.upper()}", str(v))])
    return cfg


def make_module(name="cssa", channels=8, stage=1, seed=0, **opts):
    torch.manual_seed(seed)
    return build_fusion(_cfg(**opts), name, channels, stage)


def inputs(channels, rgb_means=None, aux_means=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    rgb, aux = torch.randn(B, channels, H, W, generator=g), torch.randn(B, channels, H, W, generator=g)
    if rgb_means is not None:  # set each channel's spatial mean
        rgb = rgb - rgb.mean(dim=(2, 3), keepdim=True) + rgb_means[None, :, None, None]
        aux = aux - aux.mean(dim=(2, 3), keepdim=True) + aux_means[None, :, None, None]
    return rgb, aux


def attention(module, rgb_s, aux_s):
    both = torch.cat([rgb_s, aux_s], dim=1)
    s = torch.cat([both.mean(1, keepdim=True), both.amax(1, keepdim=True)], dim=1)
    return torch.sigmoid(F.conv2d(s, module.spatial.weight, module.spatial.bias, padding=3))


FLAGS = list(itertools.product([True, False], repeat=4))  # eca, switch, spatial, rescale


@pytest.mark.parametrize("channels", [32, 320])
@pytest.mark.parametrize("eca,switch,spatial,rescale", FLAGS)
def test_param_count_closed_form(channels, eca, switch, spatial, rescale):
    module = make_module(channels=channels, eca=eca, switch=switch, spatial=spatial, rescale=rescale)
    eca_used = eca and (switch or rescale)
    expected = 2 * ECA_KERNEL[channels] * eca_used + SPATIAL_PARAMS * spatial
    assert count_params(module) == expected == cssa.expected_params(channels, eca, switch, spatial, rescale)
    names = {n for n, _ in module.named_parameters()}
    assert names == ({"eca_rgb.conv.weight", "eca_aux.conv.weight"} if eca_used else set()) | (
        {"spatial.weight", "spatial.bias"} if spatial else set())


@pytest.mark.parametrize("name,extra", [("cssa_learnable", 1), ("cssa_soft", 0)])
@pytest.mark.parametrize("eca,spatial", [(True, True), (False, True), (True, False), (False, False)])
def test_variants_param_count(name, extra, eca, spatial):
    module = make_module(name, channels=64, eca=eca, spatial=spatial)
    expected = 2 * ECA_KERNEL[64] * eca + SPATIAL_PARAMS * spatial + extra
    assert count_params(module) == expected == cssa_variants.expected_params(64, name, eca=eca, spatial=spatial)


@pytest.mark.parametrize("opts,refused", [
    (["CADET.FUSION.NAME", "cssa_soft"], True),
    (["CADET.FUSION.NAME", "cssa_learnable"], True),
    (["CADET.FUSION.NAME", "hybrid", "CADET.FUSION.HYBRID.EARLY", "cssa_soft"], True),
    (["CADET.FUSION.NAME", "gaff", "CADET.FUSION.STAGES", "[4]", "CADET.FUSION.DEFAULT", "cssa_learnable"], True),
    (["CADET.FUSION.NAME", "cssa"], False),
    (["CADET.FUSION.NAME", "hybrid"], False),  # EARLY cssa, LATE gaff
    (["CADET.FUSION.NAME", "cssa", "CADET.FUSION.DEFAULT", "cssa_soft"], False),  # DEFAULT at no stage
])
def test_no_switching_with_a_variant_stops_at_validation(opts, refused):
    cfg = add_cadet_config(get_cfg())
    cfg.merge_from_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "configs", "Base-CADET.yaml"))
    cfg.merge_from_list([*opts, "CADET.FUSION.CSSA.SWITCH", "False"])
    validate_cadet_config(cfg)
    if refused:
        with pytest.raises(ValueError, match="SWITCH False does not apply to cssa_"):
            check_fusion_config(cfg)
    else:
        check_fusion_config(cfg)


def test_a_registered_variant_of_cssa_follows_the_switch_rule(tmp_path):
    """A user's CSSA subclass whose switch cannot be off (``switch_can_be_off = False``) is refused
    with SWITCH False when the config loads (load_config), as the built-in variants are."""
    from cadet_d2.engine.setup import load_config

    module = tmp_path / "my_cssa.py"
    module.write_text("from cadet_d2.modeling.fusion import register_fusion\n"
                      "from cadet_d2.modeling.fusion.cssa import CSSAFusion\n\n\n"
                      "@register_fusion('my_always_switching_cssa')\n"
                      "class AlwaysSwitching(CSSAFusion):\n"
                      "    switch_can_be_off = False\n")
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "Base-CADET.yaml")
    opts = ["CADET.FUSION.IMPORTS", f"['{module}']", "CADET.FUSION.NAME", "my_always_switching_cssa"]
    load_config(base, opts)
    with pytest.raises(ValueError, match="SWITCH False does not apply to my_always_switching_cssa"):
        load_config(base, [*opts, "CADET.FUSION.CSSA.SWITCH", "False"])
    with pytest.raises(ValueError, match=r"CADET.FUSION.GAFF.INTER_KERNEL = 2 must be 1 or 3"):
        load_config(base, ["CADET.FUSION.NAME", "hybrid", "CADET.FUSION.GAFF.INTER_KERNEL", "2"])


@pytest.mark.parametrize("name", ["cssa_learnable", "cssa_soft"])
def test_variants_built_directly_always_switch(name):
    # the parameter table builds every module under one config: SWITCH is cssa's option only
    on, off = make_module(name, channels=32), make_module(name, channels=32, switch=False)
    assert off.use_switch and count_params(off) == count_params(on)
    rgb, aux = inputs(32)
    assert torch.equal(on(rgb, aux).fused, off(rgb, aux).fused)
    counts = fusion_param_counts(_cfg(SWITCH=False), names=["cssa", name], channel_sets={"x": [32, 64]})["x"]
    assert counts["cssa"] == [SPATIAL_PARAMS] * 2 and counts[name] == [count_params(on)] * 2  # C 32, 64: kernel 3


@pytest.mark.parametrize("eca", [True, False])
def test_no_switch_no_spatial_is_the_mean(eca):
    module = make_module(eca=eca, switch=False, spatial=False)
    rgb, aux = inputs(8)
    out = module(rgb, aux)
    assert torch.equal(out.fused, (rgb + aux) / 2)
    assert torch.equal(out.rgb, rgb) and torch.equal(out.aux, aux)
    assert module.last_attention is None and module.last_switch_rates is None


def test_no_switch_keeps_both_streams_under_spatial_attention():
    module = make_module(switch=False)
    rgb, aux = inputs(8)
    out = module(rgb, aux)
    a = attention(module, rgb, aux)
    torch.testing.assert_close(module.last_attention, a)
    torch.testing.assert_close(out.fused, a * rgb + (1 - a) * aux)


@pytest.mark.parametrize("spatial", [True, False])
def test_no_eca_switches_by_channel_mean(spatial):
    # w = sigmoid(GAP): a channel with a negative mean has w < 0.5 and is switched
    module = make_module(eca=False, spatial=spatial)
    m_rgb, m_aux = torch.full((8,), 2.0), torch.full((8,), 1.5)
    m_rgb[3], m_aux[5], m_aux[6] = -2.0, -1.0, -0.5
    rgb, aux = inputs(8, m_rgb, m_aux)
    with EventStorage(0) as storage:
        out = module(rgb, aux)
        logged = storage.latest()
    rgb_s, aux_s = rgb.clone(), aux.clone()
    rgb_s[:, 3], aux_s[:, 5], aux_s[:, 6] = aux[:, 3], rgb[:, 5], rgb[:, 6]
    if spatial:
        a = attention(module, rgb_s, aux_s)
        torch.testing.assert_close(out.fused, a * rgb_s + (1 - a) * aux_s)
    else:
        torch.testing.assert_close(out.fused, (rgb_s + aux_s) / 2)
    assert logged["fusion/stage1/switch_rgb_from_aux"][0] == pytest.approx(1 / 8)
    assert logged["fusion/stage1/switch_aux_from_rgb"][0] == pytest.approx(2 / 8)


def test_no_eca_no_switch_rescale_uses_the_fixed_weights():
    module = make_module(eca=False, switch=False, spatial=False, rescale=True)
    m_rgb, m_aux = torch.linspace(-2, 2, 8), torch.linspace(1, -1, 8)
    rgb, aux = inputs(8, m_rgb, m_aux)
    fused = module(rgb, aux).fused
    expected = (rgb * torch.sigmoid(m_rgb)[None, :, None, None] + aux * torch.sigmoid(m_aux)[None, :, None, None]) / 2
    torch.testing.assert_close(fused, expected)


def test_no_switch_rescale_is_plain_eca():
    module = make_module(switch=False, spatial=False, rescale=True)
    rgb, aux = inputs(8)
    w_rgb, _ = module.eca_rgb(rgb)
    w_aux, _ = module.eca_aux(aux)
    torch.testing.assert_close(module(rgb, aux).fused, (rgb * w_rgb + aux * w_aux) / 2)


@pytest.mark.parametrize("name,eca,switch,spatial,rescale",
                         [(n, *f) for n in ("cssa", "cssa_learnable", "cssa_soft") for f in FLAGS
                          if any(f[:3]) and (n == "cssa" or f[1])])  # the variants need SWITCH
def test_every_parameter_gets_a_gradient(name, eca, switch, spatial, rescale):
    # no built parameter is left unused (DDP would stop on one)
    module = make_module(name, channels=32, eca=eca, switch=switch, spatial=spatial, rescale=rescale)
    rgb, aux = inputs(32)
    fused = module(rgb.requires_grad_(), aux.requires_grad_()).fused
    (fused * torch.randn(fused.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    for n, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert rgb.grad.abs().sum() > 0 and aux.grad.abs().sum() > 0


def test_full_cssa_unchanged_by_the_defaults():
    # all parts on: the same module, parameters and output as before the options existed
    full = make_module(channels=32)
    explicit = cssa.CSSAFusion(channels=32, stage=1)
    explicit.load_state_dict(full.state_dict())
    rgb, aux = inputs(32)
    assert torch.equal(full(rgb, aux).fused, explicit(rgb, aux).fused)
    assert count_params(full) == cssa.expected_params(32) == 2 * 3 + SPATIAL_PARAMS
