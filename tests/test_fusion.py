"""Fusion modules: shapes, parameter counts against closed-form formulas, gradients,
determinism, CSSA switching, FRM feedback, the registry and user modules (CPU, tiny tensors)."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import uuid

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.utils.events import EventStorage

from cadet_d2.config import add_cadet_config
from cadet_d2.modeling.fusion import FusionOutput, build_fusion, registered_fusions
from cadet_d2.modeling.fusion import cssa, cssa_variants, frm_ffm, gaff, simple
from cadet_d2.utils.params import fusion_param_table

B, H, W = 2, 8, 10
BUILTIN = {"sum", "concat", "frm_ffm", "cssa", "cssa_learnable", "cssa_soft", "gaff", "hybrid"}

# (name, channels, stage, config overrides, expected parameter count from the formula)
CASES = [
    ("sum", 32, 1, {}, simple.expected_params(32, "sum")),
    ("sum", 64, 2, {}, simple.expected_params(64, "sum")),
    ("concat", 32, 1, {}, simple.expected_params(32, "concat")),
    ("concat", 64, 2, {}, simple.expected_params(64, "concat")),
    ("frm_ffm", 32, 1, {}, frm_ffm.expected_params(32)),
    ("frm_ffm", 64, 2, {"FRM_FFM.REDUCTION": 4, "FRM_FFM.FEEDBACK": False},
     frm_ffm.expected_params(64, reduction=4)),
    ("frm_ffm", 32, 4, {"FRM_FFM.LAMBDA_C": 0.2}, frm_ffm.expected_params(32)),
    ("cssa", 32, 1, {}, cssa.expected_params(32)),
    ("cssa", 64, 3, {"CSSA.THRESHOLD": 0.3, "CSSA.RESCALE": True}, cssa.expected_params(64)),
    ("gaff", 32, 1, {}, gaff.expected_params(32)),
    ("gaff", 64, 2, {"GAFF.SE_REDUCTION": 8, "GAFF.INTER_SHARED": True, "GAFF.INTER_KERNEL": 3,
                     "GAFF.MERGE_BOTTLENECK": True},
     gaff.expected_params(64, se_reduction=8, inter_shared=True, inter_kernel=3,
                          merge_bottleneck=True)),
    ("gaff", 64, 3, {"GAFF.INTER_KERNEL": 3}, gaff.expected_params(64, inter_kernel=3)),
    ("cssa_learnable", 32, 1, {}, cssa_variants.expected_params(32, "cssa_learnable")),
    ("cssa_learnable", 64, 2, {"CSSA.RESCALE": True}, cssa.expected_params(64) + 1),
    ("cssa_soft", 32, 1, {}, cssa_variants.expected_params(32, "cssa_soft")),
    ("hybrid", 32, 1, {}, cssa.expected_params(32)),
    ("hybrid", 64, 3, {}, gaff.expected_params(64)),
    ("hybrid", 64, 3, {"HYBRID.EARLY_STAGES": "[1, 2, 3]", "HYBRID.EARLY": "cssa_soft"}, cssa.expected_params(64)),
]
IDS = [f"{n}-C{c}-s{s}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}"
       for n, c, s, o, _ in CASES]


def make_cfg(**overrides):
    cfg = add_cadet_config(get_cfg())
    opts = []
    for key, value in overrides.items():
        opts += [f"CADET.FUSION.{key}", str(value)]
    cfg.merge_from_list(opts)
    return cfg


def build(name, channels, stage, overrides, seed=0):
    torch.manual_seed(seed)
    return build_fusion(make_cfg(**overrides), name, channels, stage)


def inputs(channels, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, channels, H, W, generator=g), torch.randn(B, channels, H, W, generator=g)


def test_builtins_registered():
    assert BUILTIN <= set(registered_fusions())


@pytest.mark.parametrize("name,channels,stage,overrides,expected", CASES, ids=IDS)
def test_shapes_and_param_count(name, channels, stage, overrides, expected):
    module = build(name, channels, stage, overrides)
    rgb, aux = inputs(channels)
    out = module(rgb, aux)
    assert isinstance(out, FusionOutput)
    for t in out:
        assert t.shape == (B, channels, H, W)
        assert torch.isfinite(t).all()
    assert sum(p.numel() for p in module.parameters()) == expected
    feedback = name == "frm_ffm" and overrides.get("FRM_FFM.FEEDBACK", True)
    if not feedback:  # every other module leaves the streams untouched
        assert torch.equal(out.rgb, rgb) and torch.equal(out.aux, aux)


def test_simple_formulas():
    rgb, aux = inputs(32)
    torch.testing.assert_close(build("sum", 32, 1, {})(rgb, aux).fused, rgb + aux)
    concat = build("concat", 32, 1, {})
    expected = F.conv2d(torch.cat([rgb, aux], 1), concat.proj.weight, concat.proj.bias)
    torch.testing.assert_close(concat(rgb, aux).fused, expected)


def test_param_formulas_known_values():
    # hand-computed: concat C=32: 2*32*32 + 32; ECA kernels: C=32 -> 3, C=64 -> 3, C=128/320/512 -> 5
    assert simple.expected_params(32) == 2080
    assert [cssa.eca_kernel_size(c) for c in (32, 64, 128, 160, 320, 512)] == [3, 3, 5, 5, 5, 5]
    assert cssa.expected_params(320) == 2 * 5 + 99
    # GAFF C=320, r=4, separate 1x1, direct merge: SE 2*(2*320*80+80+320), inter 2*(320^2+320), merge
    assert gaff.expected_params(320) == 2 * (51200 + 400) + 2 * (102400 + 320) + 204800 + 320


@pytest.mark.parametrize("name,channels,stage,overrides,expected", CASES, ids=IDS)
def test_gradients_reach_every_parameter(name, channels, stage, overrides, expected):
    module = build(name, channels, stage, overrides)
    rgb, aux = inputs(channels)
    rgb.requires_grad_(True)
    aux.requires_grad_(True)
    fused = module(rgb, aux).fused
    # A fixed random projection instead of fused.sum(): frm_ffm ends in a train-mode BatchNorm,
    # whose output sums to a constant per channel, so fused.sum() has zero gradient upstream.
    weight = torch.randn(fused.shape, generator=torch.Generator().manual_seed(2))
    (fused * weight).sum().backward()
    for t in (rgb, aux):
        assert t.grad is not None and t.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
    if name == "cssa":  # the ECA convs are trained through the straight-through factor
        assert {n for n, _ in module.named_parameters()} == {
            "eca_rgb.conv.weight", "eca_aux.conv.weight", "spatial.weight", "spatial.bias"}


@pytest.mark.parametrize("name,channels,stage,overrides,expected", CASES, ids=IDS)
def test_determinism(name, channels, stage, overrides, expected):
    a = build(name, channels, stage, overrides).eval()
    b = build(name, channels, stage, overrides).eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rgb, aux = inputs(channels)
    with torch.no_grad():
        out_a, out_a2, out_b = a(rgb, aux), a(rgb, aux), b(rgb, aux)
    for x, y, z in zip(out_a, out_a2, out_b):
        assert torch.equal(x, y) and torch.equal(x, z)


# ---- CSSA --------------------------------------------------------------------------------------

def _with_means(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """x with its per-channel spatial mean set to ``means`` (C,)."""
    return x - x.mean(dim=(2, 3), keepdim=True) + means[None, :, None, None]


def _identity_eca(module):
    # C = 8 -> kernel 3; weights [0, 1, 0] make w_c = sigmoid(GAP_c)
    for eca in (module.eca_rgb, module.eca_aux):
        assert eca.conv.weight.shape == (1, 1, 3)
        eca.conv.weight.data = torch.tensor([[[0.0, 1.0, 0.0]]])


def _attention(module, rgb_s, aux_s):
    both = torch.cat([rgb_s, aux_s], dim=1)
    s = torch.cat([both.mean(1, keepdim=True), both.amax(1, keepdim=True)], dim=1)
    return torch.sigmoid(F.conv2d(s, module.spatial.weight, module.spatial.bias, padding=3))


@pytest.mark.parametrize("rescale", [False, True])
def test_cssa_switching_semantics(rescale):
    torch.manual_seed(0)
    module = cssa.CSSAFusion(channels=8, stage=2, threshold=0.5, rescale=rescale)
    _identity_eca(module)
    rgb, aux = inputs(8)
    m_rgb = torch.full((8,), 2.0)
    m_rgb[3] = -2.0  # w_R[3] = sigmoid(-2) < 0.5: RGB channel 3 comes from aux
    m_aux = torch.full((8,), 1.5)
    m_aux[5] = -1.0  # w_X[5] < 0.5: aux channel 5 comes from RGB
    rgb, aux = _with_means(rgb, m_rgb), _with_means(aux, m_aux)
    with EventStorage(0) as storage:
        out = module(rgb, aux)
        logged = storage.latest()
    rgb_s, aux_s = rgb.clone(), aux.clone()
    if rescale:
        rgb_s = rgb_s * torch.sigmoid(m_rgb)[None, :, None, None]
        aux_s = aux_s * torch.sigmoid(m_aux)[None, :, None, None]
    rgb_s[:, 3], aux_s[:, 5] = aux[:, 3], rgb[:, 5]
    a = _attention(module, rgb_s, aux_s)
    assert module.last_attention.shape == (B, 1, H, W)
    assert not module.last_attention.requires_grad
    torch.testing.assert_close(module.last_attention, a)
    torch.testing.assert_close(out.fused, a * rgb_s + (1 - a) * aux_s)
    assert torch.equal(out.rgb, rgb) and torch.equal(out.aux, aux)
    assert logged["fusion/stage2/switch_rgb_from_aux"][0] == pytest.approx(1 / 8)
    assert logged["fusion/stage2/switch_aux_from_rgb"][0] == pytest.approx(1 / 8)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_cssa_eca_trained_through_kept_and_switched(threshold):
    # tau = 0: every channel kept; tau = 1: every channel switched. Both must train the ECA convs
    # (straight-through factor), while the forward values stay those of the hard selection.
    module = build("cssa", 32, 1, {"CSSA.THRESHOLD": threshold})
    rgb, aux = inputs(32)
    fused = module(rgb, aux).fused
    (fused * torch.randn(fused.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    for eca in (module.eca_rgb, module.eca_aux):
        assert eca.conv.weight.grad is not None and eca.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_cssa_threshold_extremes(threshold):
    # tau = 0: sigmoid weights are never < 0, so nothing switches: F = a*R + (1-a)*X.
    # tau = 1: every channel switches (weights < 1): F = a*X + (1-a)*R.
    torch.manual_seed(0)
    module = build("cssa", 32, 1, {"CSSA.THRESHOLD": threshold})
    rgb, aux = inputs(32)
    with EventStorage(0) as storage:
        fused = module(rgb, aux).fused
        frac = storage.latest()["fusion/stage1/switch_rgb_from_aux"][0]
    a = module.last_attention
    first, second = (rgb, aux) if threshold == 0.0 else (aux, rgb)
    torch.testing.assert_close(a, _attention(module, first, second))
    torch.testing.assert_close(fused, a * first + (1 - a) * second)
    assert frac == (0.0 if threshold == 0.0 else 1.0)


# ---- FRM + FFM ---------------------------------------------------------------------------------

def _constant_frm_weights(module, channels):
    """FRM's last layers set to zero weights and constant biases: wc_R = 0.5, wc_X = sigmoid(-1),
    ws_R = 0.5, ws_X = sigmoid(2), so R' = R + (lc wc_X + ls ws_X) X and X' = X + (lc + ls) 0.5 R."""
    channel, spatial = module.frm.channel_mlp[-1], module.frm.spatial_mlp[-1]
    with torch.no_grad():
        for layer in (channel, spatial):
            layer.weight.zero_()
        channel.bias.copy_(torch.cat([torch.zeros(channels), torch.full((channels,), -1.0)]))
        spatial.bias.copy_(torch.tensor([0.0, 2.0]))
    s = torch.sigmoid(torch.tensor([-1.0, 2.0]))
    lc, ls = module.frm.lambda_c, module.frm.lambda_s
    return lambda r, x: (r + (lc * s[0] + ls * s[1]) * x, x + (lc + ls) * 0.5 * r)


def test_frm_ffm_feedback():
    # Same seed, so both builds hold the same weights; FEEDBACK only chooses the streams' maps.
    with_fb = build("frm_ffm", 32, 2, {"FRM_FFM.FEEDBACK": True}).eval()
    without = build("frm_ffm", 32, 2, {"FRM_FFM.FEEDBACK": False}).eval()
    sa, sb = with_fb.state_dict(), without.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rectify = _constant_frm_weights(with_fb, 32)
    _constant_frm_weights(without, 32)
    rgb, aux = inputs(32)
    rgb_r, aux_r = rectify(rgb, aux)
    with torch.no_grad():
        out_fb, out_plain = with_fb(rgb, aux), without(rgb, aux)
        # what the fused map would be if the FFM ran on the unrectified inputs
        tokens = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
        to_map = lambda t: t.transpose(1, 2).reshape(B, 32, H, W)  # noqa: E731
        fuse = lambda r, x: without.fuse(*map(to_map, without.exchange(tokens(r), tokens(x))))  # noqa: E731
        fused_rectified, fused_unrectified = fuse(rgb_r, aux_r), fuse(rgb, aux)
    torch.testing.assert_close(out_fb.rgb, rgb_r)
    torch.testing.assert_close(out_fb.aux, aux_r)
    assert torch.equal(out_plain.rgb, rgb) and torch.equal(out_plain.aux, aux)
    # the fused map always comes from the rectified maps
    torch.testing.assert_close(out_plain.fused, fused_rectified)
    torch.testing.assert_close(out_fb.fused, fused_rectified)
    assert not torch.allclose(out_plain.fused, fused_unrectified, atol=1e-3)


def test_frm_rectification_formula():
    module = frm_ffm.FRMFFMFusion(channels=16, stage=1, num_heads=1, lambda_c=0.2, lambda_s=0.6)
    rectify = _constant_frm_weights(module, 16)
    rgb, aux = inputs(16)
    with torch.no_grad():
        out = module(rgb, aux)
    rgb_r, aux_r = rectify(rgb, aux)
    torch.testing.assert_close(out.rgb, rgb_r)
    torch.testing.assert_close(out.aux, aux_r)


def _exchange_by_formula(exchange, t_rgb, t_aux, heads, cross=True):
    """FFM stage 1 from the reference formulas, with einsum, on the weights of ``exchange``;
    ``cross=False`` gives each stream its own context instead."""
    d = t_rgb.shape[-1] // heads
    parts = []
    for i, t in enumerate((t_rgb, t_aux)):
        e = F.relu(t @ exchange.embed[i].weight.T + exchange.embed[i].bias)
        i_s, u_s = e[..., :d * heads], e[..., d * heads:]
        kv = i_s @ exchange.kv[i].weight.T
        k = kv[..., :d * heads].unflatten(-1, (heads, d))  # (B, N, h, d)
        v = kv[..., d * heads:].unflatten(-1, (heads, d))
        logits = torch.einsum("bnhc,bnhe->bhce", k, v) / d ** 0.5
        ctx = torch.exp(logits) / torch.exp(logits).sum(dim=2, keepdim=True)  # over k's channel
        parts.append((i_s.unflatten(-1, (heads, d)), u_s, ctx))
    out = []
    for i, t in enumerate((t_rgb, t_aux)):
        q, u, _ = parts[i]
        a = torch.einsum("bnhc,bhce->bnhe", q, parts[1 - i if cross else i][2]).flatten(2)
        y = torch.cat([a, u], dim=-1) @ exchange.proj[i].weight.T + exchange.proj[i].bias
        out.append(F.layer_norm(t + y, t.shape[-1:], exchange.norm[i].weight, exchange.norm[i].bias))
    return out


def test_ffm_exchange_is_cross_modal():
    # each stream's exchanged tokens use its own queries and the context of the *other* stream
    torch.manual_seed(0)
    exchange = frm_ffm.CrossExchange(16, num_heads=2)
    t_rgb, t_aux = torch.randn(2, 2, 12, 16).unbind(0)
    with torch.no_grad():
        e_rgb, e_aux = exchange(t_rgb, t_aux)
        ref_rgb, ref_aux = _exchange_by_formula(exchange, t_rgb, t_aux, heads=2)
    assert e_rgb.shape == (2, 12, 16)
    torch.testing.assert_close(e_rgb, ref_rgb)
    torch.testing.assert_close(e_aux, ref_aux)
    # these inputs tell the two apart: with each stream's own context the result differs
    own_rgb, own_aux = _exchange_by_formula(exchange, t_rgb, t_aux, heads=2, cross=False)
    assert not torch.allclose(e_rgb, own_rgb, atol=1e-3)
    assert not torch.allclose(e_aux, own_aux, atol=1e-3)


def test_ffm_context_softmax_is_softmax_without_denormals():
    # fp32: equal to softmax (forward and backward) to 1e-6; no denormal number in the output
    # or in the input gradient, where softmax gives many (logits spread over hundreds)
    torch.manual_seed(0)
    small = torch.randn(2, 3, 8, 8, dtype=torch.float64).float().requires_grad_()
    g = torch.randn(2, 3, 8, 8)
    ref = small.softmax(dim=-2)
    (ref_grad,) = torch.autograd.grad(ref, small, g)
    out = frm_ffm.context_softmax(small, dim=-2)
    (grad,) = torch.autograd.grad(out, small, g)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-6)
    wide = (torch.randn(2, 1, 64, 64) * 40).requires_grad_()
    tiny = torch.finfo(torch.float32).tiny

    def denormals(t):
        return int(((t != 0) & (t.abs() < tiny)).sum())
    assert denormals(wide.softmax(dim=-2)) > 0  # the case it is for
    out = frm_ffm.context_softmax(wide, dim=-2)
    (grad,) = torch.autograd.grad(out, wide, torch.randn(2, 1, 64, 64))
    assert denormals(out) == 0 and denormals(grad) == 0
    torch.testing.assert_close(out, wide.softmax(dim=-2), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(dim=-2), torch.ones(2, 1, 64))
    bf16 = wide.detach().bfloat16()
    assert torch.equal(frm_ffm.context_softmax(bf16, dim=-2), bf16.softmax(dim=-2))  # other dtypes: softmax


def test_frm_ffm_heads_must_divide_channels():
    with pytest.raises(ValueError, match="heads"):
        build("frm_ffm", 32, 3, {})  # stage 3 has 5 heads


# ---- GAFF --------------------------------------------------------------------------------------

def _set_gaff(module, se_gate, guide_scale, guide_bias):
    """Hand-set GAFF weights (C channels, 1x1 guidance). SE: zero weights, fc2 bias b, so the gate
    is sigmoid(b) per modality. Guidance conv: diag(scale) + bias. Merge: [I, 2I], no bias."""
    c = module.channels
    with torch.no_grad():
        for se, b in zip((module.se_rgb, module.se_aux), se_gate):
            se.fc1.weight.zero_()
            se.fc1.bias.zero_()
            se.fc2.weight.zero_()
            se.fc2.bias.fill_(b)
        for conv, scale, bias in zip((module.guide_rgb, module.guide_aux), guide_scale, guide_bias):
            conv.weight.copy_(torch.diag(torch.tensor(scale))[:, :, None, None])
            conv.bias.copy_(torch.tensor(bias))
        module.merge.weight.copy_(torch.cat([torch.eye(c), 2 * torch.eye(c)], 1)[:, :, None, None])
        module.merge.bias.zero_()


def test_gaff_formula_by_hand():
    # C = 2: R' = sigmoid(1) R, X' = sigmoid(-1) X; g_R = sigmoid(2 X' + 0.5) per channel
    # (guided by the *other* modality), g_X = sigmoid(-R' - 1); fused = R_g + 2 X_g.
    module = gaff.GAFFFusion(channels=2, stage=3, se_reduction=2)
    _set_gaff(module, se_gate=(1.0, -1.0), guide_scale=([2.0, 2.0], [-1.0, -1.0]),
              guide_bias=([0.5, 0.5], [-1.0, -1.0]))
    rgb = torch.tensor([[[[1.0, -2.0]], [[0.0, 3.0]]]])  # (1, 2, 1, 2)
    aux = torch.tensor([[[[4.0, 0.5]], [[-1.0, 2.0]]]])
    r_e, x_e = 0.7310585786 * rgb, 0.2689414214 * aux
    g_rgb, g_aux = torch.sigmoid(2 * x_e + 0.5), torch.sigmoid(-r_e - 1)
    with EventStorage(0) as storage:
        out = module(rgb, aux)
        logged = storage.latest()
    torch.testing.assert_close(module.last_guidance_rgb, g_rgb)
    torch.testing.assert_close(module.last_guidance_aux, g_aux)
    torch.testing.assert_close(out.fused, r_e * (1 + g_rgb) + 2 * x_e * (1 + g_aux))
    assert torch.equal(out.rgb, rgb) and torch.equal(out.aux, aux)
    assert logged["fusion/stage3/gaff_guidance_rgb"][0] == pytest.approx(g_rgb.mean().item(), abs=1e-6)
    assert logged["fusion/stage3/gaff_guidance_aux"][0] == pytest.approx(g_aux.mean().item(), abs=1e-6)


def test_gaff_shared_guidance_conv():
    module = build("gaff", 32, 3, {"GAFF.INTER_SHARED": True})
    assert module.guide_rgb is module.guide_aux
    shared = gaff.GAFFFusion(channels=2, stage=1, se_reduction=2, inter_shared=True)
    _set_gaff(shared, se_gate=(0.0, 0.0), guide_scale=([3.0, -1.0], [3.0, -1.0]),
              guide_bias=([0.0, 1.0], [0.0, 1.0]))
    rgb, aux = torch.full((1, 2, 1, 1), 2.0), torch.full((1, 2, 1, 1), -2.0)
    shared(rgb, aux)
    # gates sigmoid(0) = 0.5: X' = -1, R' = 1; one conv, applied to each other stream
    torch.testing.assert_close(shared.last_guidance_rgb.flatten(), torch.sigmoid(torch.tensor([-3.0, 2.0])))
    torch.testing.assert_close(shared.last_guidance_aux.flatten(), torch.sigmoid(torch.tensor([3.0, 0.0])))
    assert not shared.last_guidance_rgb.requires_grad


# ---- registry and user modules -------------------------------------------------------------------

def test_unknown_name_lists_registered():
    with pytest.raises(KeyError) as info:
        build_fusion(make_cfg(), "no_such_fusion", 32, 1)
    for name in BUILTIN:
        assert repr(name)[1:-1] in str(info.value)


USER_MODULE = '''
import torch
from detectron2.config import configurable
from cadet_d2.modeling.fusion import FUSION_REGISTRY, FusionOutput


@FUSION_REGISTRY.register()
class {cls}(torch.nn.Module):
    @configurable
    def __init__(self, *, channels, stage):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((channels,), 2.0))

    @classmethod
    def from_config(cls, cfg, channels, stage):
        return {{"channels": channels, "stage": stage}}

    def forward(self, rgb, aux):
        return FusionOutput(self.scale[None, :, None, None] * rgb - aux, rgb, aux)
'''


@pytest.fixture
def user_module(tmp_path):
    cls = f"UserFusion{uuid.uuid4().hex[:8]}"
    mod = f"user_fusion_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{mod}.py"
    path.write_text(USER_MODULE.format(cls=cls))
    yield cls, mod, path
    # The registered class stays in the registry (it has no public removal); its name is unique.
    for key in (mod, "cadet_user_" + mod):
        sys.modules.pop(key, None)


@pytest.mark.parametrize("how", ["path", "dotted"])
def test_user_module_via_imports(user_module, how, monkeypatch):
    cls, mod, path = user_module
    cfg = make_cfg()
    with pytest.raises(KeyError):
        build_fusion(cfg, cls, 16, 1)  # not imported yet
    if how == "dotted":
        monkeypatch.syspath_prepend(str(path.parent))
        cfg.CADET.FUSION.IMPORTS = [mod]
    else:
        cfg.CADET.FUSION.IMPORTS = [str(path)]
    module = build_fusion(cfg, cls, 16, 1)
    assert type(module).__name__ == cls and cls in registered_fusions()
    rgb, aux = inputs(16)
    torch.testing.assert_close(module(rgb, aux).fused, 2 * rgb - aux)


# ---- parameter table -------------------------------------------------------------------------------

def test_param_table_and_tool(tmp_path):
    sets = {"tiny": (16, 32, 40, 64)}  # divisible by the heads 1, 2, 5, 8
    table = fusion_param_table(names=["frm_ffm", "gaff"], channel_sets=sets)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    total = f"{sum(frm_ffm.expected_params(c) for c in sets['tiny']):,}"
    assert rows["frm_ffm"].rstrip(" |").endswith(total)
    stages_34 = f"{gaff.expected_params(40) + gaff.expected_params(64):,}"
    assert f"| {stages_34} |" in rows["gaff"]

    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "tools", "count_params.py")
    spec = importlib.util.spec_from_file_location("count_params_tool", tool)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "params.md"
    text = cli.main(["--names", "concat", "--out", str(out), "CADET.FUSION.CSSA.THRESHOLD", "0.4"])
    assert out.read_text() == text
    assert f"| concat | {simple.expected_params(64):,} |" in text  # b1-b5, stage 1


def test_count_params_tool_counts_the_config_and_validates_it():
    """With --config-file, the detector the config describes comes first (built without reading
    any weights file, so configs with CADET.BACKBONE.PRETRAINED count too); a bad key or value
    stops like tools/train_net.py, naming it."""
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "count_params.py")
    spec = importlib.util.spec_from_file_location("count_params_tool", tool)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    text = cli.main(["--names", "sum", "--config-file", "configs/datasets/kaist/cssa_mit_b1_s1.yaml",
                     "CADET.BACKBONE.SIZE", "b0"])
    lines = text.splitlines()
    assert lines[0] == "## This config: configs/datasets/kaist/cssa_mit_b1_s1.yaml"
    assert lines[2] == "CadetRCNN, backbone build_dual_mit_fpn_backbone, MiT b0, fusion cssa at stages [1] " \
                       "(frm_ffm elsewhere)"
    total, backbone, fusion = (c.strip() for c in lines[6].strip("|").split("|"))
    assert float(total) > float(backbone) > 0 and int(fusion.replace(",", "")) > 0
    one = cli.main(["--names", "sum", "--config-file", "configs/modality/rgb.yaml", "CADET.BACKBONE.SIZE", "b0"])
    assert "MiT b0, one stream per detector, no fusion module (CADET.FUSION.* unused)" in one
    assert "| 0 |\n" in one.split("## Fusion")[0]
    with pytest.raises(KeyError, match="unknown config key 'CADET.FUSION.NAMEE'; did you mean CADET.FUSION.NAME"):
        cli.main(["--config-file", "configs/demo.yaml", "CADET.FUSION.NAMEE", "sum"])
    with pytest.raises(ValueError, match="CADET.BACKBONE.SIZE = 'b9' is not allowed"):
        cli.main(["CADET.BACKBONE.SIZE", "b9"])


@pytest.mark.parametrize("opts, why", [
    (["MODEL.BACKBONE.NAME", "build_mit_fpn_backbone"], "MODEL.BACKBONE.NAME build_mit_fpn_backbone is one MiT stream"),
    (["CADET.INPUT.MODALITIES", "['rgb']", "MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"],
     "CADET.INPUT.MODALITIES ['rgb'] give one stream"),
])
def test_fusion_keys_on_a_one_stream_model_are_warned(caplog, opts, why):
    """CADET.FUSION.NAME cssa on a one-stream model would silently train no CSSA: warned."""
    from cadet_d2.engine import load_config
    from detectron2.modeling import build_model

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", *opts]
    with caplog.at_level(logging.WARNING, logger="cadet_d2.modeling.backbone.single"):
        build_model(load_config(os.path.join(repo, "configs/Base-CADET.yaml"), base))
        assert not [r for r in caplog.records if "CADET.FUSION" in r.getMessage()]  # the defaults: no warning
        build_model(load_config(os.path.join(repo, "configs/Base-CADET.yaml"), [*base, "CADET.FUSION.NAME", "cssa"]))
    msgs = [r.getMessage() for r in caplog.records if "CADET.FUSION" in r.getMessage()]
    assert len(msgs) == 1 and "CADET.FUSION (NAME cssa, STAGES [1, 2, 3, 4], DEFAULT frm_ffm) is unused: " in msgs[0]
    assert why in msgs[0]


def test_count_params_names_do_not_swallow_config_keys(capsys):
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "count_params.py")
    spec = importlib.util.spec_from_file_location("count_params_tool", tool)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit) as info:
        cli.main(["--names", "sum", "CADET.BACKBONE.SIZE", "b0"])
    assert info.value.code == 2
    assert "--names took 'CADET.BACKBONE.SIZE': put config overrides KEY VALUE after the other options" in \
        capsys.readouterr().err
