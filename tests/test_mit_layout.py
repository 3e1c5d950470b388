"""MiT's stage layout (cadet_d2/modeling/backbone/mit.py): channels-last stage outputs give the
values and gradients of timm's own stage forward, with the same state-dict keys."""
from __future__ import annotations

import pytest
import torch

from cadet_d2.modeling.backbone.mit import MiT


def _timm_forward(stream: MiT, x: torch.Tensor) -> list[torch.Tensor]:
    """The reference: timm's stage modules called as timm calls them."""
    outs = []
    for i, stage in enumerate(stream.stages):
        x = stage(stream.patch_embed(x) if i == 0 else x)
        outs.append(x)
    return outs


@pytest.mark.parametrize("channels_last", [False, True])
def test_stage_outputs_and_gradients_match_timms_stages(channels_last):
    torch.manual_seed(0)
    stream = MiT("b0", in_chans=2, drop_path_rate=0.0)
    keys = list(stream.state_dict())
    stream.set_channels_last(channels_last)
    assert list(stream.state_dict()) == keys  # a layout, not a parameter: pretrained files still load
    x = torch.randn(2, 2, 64, 96)
    ref = _timm_forward(stream, x)
    ref_grads = torch.autograd.grad(sum((o * o.detach().sin()).sum() for o in ref), list(stream.parameters()))
    outs = stream(x)
    grads = torch.autograd.grad(sum((o * o.detach().sin()).sum() for o in outs), list(stream.parameters()))
    for o, r in zip(outs, ref):
        assert o.shape == r.shape and o.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert o.is_contiguous() != channels_last
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):  # sums over many positions, in another order: 1e-5 of the largest
        torch.testing.assert_close(g, r, atol=1e-5 * float(r.abs().max()), rtol=1e-5)


def test_checkpointed_stages_keep_the_layout_and_values():
    torch.manual_seed(0)
    stream = MiT("b0", in_chans=3, drop_path_rate=0.0)
    stream.set_channels_last(True)
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    plain = stream(x)
    stream.set_grad_checkpointing([1, 2, 3, 4])
    ckpt = stream(x)
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b)
    g_plain = torch.autograd.grad(sum(o.sum() for o in plain), x)[0]
    g_ckpt = torch.autograd.grad(sum(o.sum() for o in ckpt), x)[0]
    torch.testing.assert_close(g_plain, g_ckpt)



def test_math_attention_gives_the_fused_kernels_values_and_gradients():
    torch.manual_seed(0)
    stream = MiT("b0", in_chans=2, drop_path_rate=0.0)
    x = torch.randn(2, 2, 64, 96)

    def run(kind):
        stream.set_attention(kind)
        outs = stream(x)
        loss = sum((o * o.detach().sin()).sum() for o in outs)
        return outs, torch.autograd.grad(loss, list(stream.parameters()))

    fused, g_fused = run("fused")
    math, g_math = run("math")
    assert {blk.attn.fused_attn for s in stream.stages for blk in s.blocks} == {False}
    for a, b in zip(math, fused):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_math, g_fused):
        torch.testing.assert_close(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-5)
    with pytest.raises(ValueError, match="flash"):
        stream.set_attention("flash")


@pytest.mark.parametrize("setting, device, kind", [("auto", "cpu", "math"), ("auto", "cuda", "fused"),
                                                   ("fused", "cpu", "fused"), ("math", "cuda", "math")])
def test_attention_setting_resolves_by_device(setting, device, kind):
    from cadet_d2.engine import load_config
    from cadet_d2.modeling.backbone.common import attention_kind

    cfg = load_config("configs/demo.yaml", ["CADET.BACKBONE.ATTENTION", setting, "MODEL.DEVICE", device])
    assert attention_kind(cfg) == kind


def test_unknown_attention_setting_fails_when_the_config_loads():
    from cadet_d2.engine import load_config

    with pytest.raises(ValueError, match="CADET.BACKBONE.ATTENTION"):
        load_config("configs/demo.yaml", ["CADET.BACKBONE.ATTENTION", "flash"])
