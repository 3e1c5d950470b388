"""SegFormer's Mix Transformer (MiT) encoders b0-b5, any number of input channels.

Built on timm's ``PyramidVisionTransformerV2`` with MLP ratio 4 at every stage, which has MiT's
structure (overlapping patch embeddings 7x7/4 then 3x3/2, efficient self-attention with
spatial reduction 8/4/2/1, Mix-FFN with a depth-wise 3x3 conv) and parameter counts
(b0 3.32M, b1 13.15M, b2 24.2M, b4 60.8M, b5 81.4M for 3 input channels).
"""
from __future__ import annotations

import torch
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...layout import MIT_ATTENTION_KINDS, MIT_HEADS, MIT_SPECS, MIT_SR_RATIOS, MIT_STRIDES  # noqa: F401 (re-exported)


class MiT(nn.Module):
    """A MiT encoder run stage by stage.

    ``forward_stage(i, x)``: stage ``i`` (0-3) maps (B, C_in, H, W) to
    (B, embed_dims[i], H / stride_i, W / stride_i) with strides 4, 8, 16, 32
    (stage 0 takes the image, stage i > 0 the previous stage's output).
    ``feature_info`` lists ``num_chs`` and ``reduction`` per stage, as in timm.

    Layout: the blocks work on tokens (B, H*W, C), which is the memory order of a
    channels-last (B, C, H, W) map. In channels-last mode each stage's output stays in that
    order (a (B, C, H, W) view with channels-last strides; the first stage's input is made
    channels-last), so that the convolutions after it (the next patch embedding, the fusion
    modules' convs, the FPN) take it without reordering and the next stage's tokens need no
    copy; otherwise (the default) the output is copied to contiguous NCHW, as timm's stage does.
    Same values either way (up to the kernels' summation order); :meth:`set_channels_last`.
    """

    def __init__(self, size: str = "b0", in_chans: int = 3, drop_path_rate: float = 0.1):
        super().__init__()
        if size not in MIT_SPECS:
            raise ValueError(f"Unknown MiT size {size!r}; choose from {list(MIT_SPECS)}")
        spec = MIT_SPECS[size]
        net = PyramidVisionTransformerV2(
            in_chans=in_chans, num_classes=0, depths=spec["depths"], embed_dims=spec["embed_dims"],
            num_heads=MIT_HEADS, sr_ratios=MIT_SR_RATIOS, mlp_ratios=(4, 4, 4, 4),
            drop_path_rate=drop_path_rate,
        )
        self.size, self.in_chans = size, in_chans
        self.embed_dims = tuple(spec["embed_dims"])
        self.patch_embed = net.patch_embed  # (B, C_in, H, W) -> (B, H/4, W/4, C1)
        self.stages = net.stages
        self.channels_last = False
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=f"stages.{i}")
            for i, (c, r) in enumerate(zip(self.embed_dims, MIT_STRIDES))
        ]

    def set_grad_checkpointing(self, stages: list[int] | tuple[int, ...]) -> None:
        """Recompute the blocks of these stages (1-4) in backward to save activation memory."""
        for i, stage in enumerate(self.stages):
            stage.grad_checkpointing = (i + 1) in stages

    def set_channels_last(self, on: bool) -> None:
        """Stage outputs in channels-last memory order (see the class doc)."""
        self.channels_last = bool(on)

    def set_attention(self, kind: str) -> None:
        """Attention kernel of every block: ``"fused"`` (``scaled_dot_product_attention``) or
        ``"math"`` (softmax(q k^T / sqrt(d)) v as three ops: matrix products that oneDNN runs on
        AMX in bf16). Same parameters and values up to rounding."""
        if kind not in MIT_ATTENTION_KINDS:
            raise ValueError(f"attention kind {kind!r}: choose from {list(MIT_ATTENTION_KINDS)}")
        for stage in self.stages:
            for blk in stage.blocks:
                blk.attn.fused_attn = kind == "fused"

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i`` (timm's stage: downsampling patch embedding, blocks, norm) on
        (B, C_in, H, W) -> (B, C_i, H / s_i, W / s_i)."""
        stage = self.stages[i]
        if i == 0:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.patch_embed(x)  # (B, H, W, C)
        elif stage.downsample is not None:
            x = stage.downsample(x)  # (B, H, W, C)
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        for blk in stage.blocks:
            if stage.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, (h, w), use_reentrant=False)
            else:
                x = blk(x, (h, w))
        x = stage.norm(x).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return x if self.channels_last else x.contiguous()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C_in, H, W) -> four maps (B, C_i, H / s_i, W / s_i)."""
        outs = []
        for i in range(len(self.stages)):
            x = self.forward_stage(i, x)
            outs.append(x)
        return outs


def mit_b0(in_chans: int = 3, **kwargs) -> MiT:
    return MiT("b0", in_chans, **kwargs)


def mit_b1(in_chans: int = 3, **kwargs) -> MiT:
    return MiT("b1", in_chans, **kwargs)


def mit_b2(in_chans: int = 3, **kwargs) -> MiT:
    return MiT("b2", in_chans, **kwargs)


def mit_b4(in_chans: int = 3, **kwargs) -> MiT:
    return MiT("b4", in_chans, **kwargs)


def mit_b5(in_chans: int = 3, **kwargs) -> MiT:
    return MiT("b5", in_chans, **kwargs)
