"""CMX baseline (Liu et al., IEEE T-ITS 2023): feature rectify module (FRM) + feature fusion
module (FFM), registered as ``frm_ffm``.

Written from the formulas of the reference notes (fusion-modules.md):

FRM, with r = ``reduction``, lc = ``lambda_c``, ls = ``lambda_s``::

    v = [GAP(R), GMP(R), GAP(X), GMP(X)]                      (B, 4C)
    [wc_R, wc_X] = sigmoid(Lin(4C/r -> 2C)(ReLU(Lin(4C -> 4C/r)(v))))    (B, C) each
    [ws_R, ws_X] = sigmoid(Conv1x1(2C/r -> 2)(ReLU(Conv1x1(2C -> 2C/r)([R, X]))))  (B, 1, H, W) each
    R' = R + lc * wc_X * X + ls * ws_X * X
    X' = X + lc * wc_R * R + ls * ws_R * R

FFM stage 1 (exchange), per stream s in {R', X'} as tokens t_s (B, N=HW, C)::

    [i_s, u_s] = ReLU(Lin(C -> 2C)(t_s))           interaction and residual parts, (B, N, C) each
    [k_s, v_s] = Lin(C -> 2C, no bias)(i_s)        split into heads, (B, h, N, C/h) each
    ctx_s = softmax_{over k's channel}(k_s^T v_s / sqrt(C/h))     (B, h, C/h, C/h)
    a_R = i_R @ ctx_X,  a_X = i_X @ ctx_R           (queries of one modality, context of the other)
    e_s = LayerNorm(t_s + Lin(2C -> C)([a_s, u_s]))   (B, N, C)

The residual connection and LayerNorm of stage 1 are a choice of this implementation (as in CMX's
code; the reference formulas stop at the projection). Heads h = 1, 2, 5, 8 for MiT stages 1-4.

FFM stage 2 (fusion)::

    h = Conv1x1(2C -> C)([e_R, e_X])
    fused = BatchNorm2d(h + Conv1x1(C -> C)(ReLU(DWConv3x3(h))))

``fused`` always comes from the rectified maps; ``feedback`` only decides which maps continue in
the streams: R', X' (True, CMX) or the unchanged inputs (False).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ...layout import MIT_HEADS
from .base import register_fusion, FusionOutput


class FeatureRectify(nn.Module):
    """FRM: (R, X) each (B, C, H, W) -> (R', X') each (B, C, H, W)."""

    def __init__(self, channels: int, reduction: int = 1, lambda_c: float = 0.5,
                 lambda_s: float = 0.5) -> None:
        super().__init__()
        c = channels
        self.lambda_c = lambda_c
        self.lambda_s = lambda_s
        self.channel_mlp = nn.Sequential(
            nn.Linear(4 * c, 4 * c // reduction), nn.ReLU(inplace=True),
            nn.Linear(4 * c // reduction, 2 * c),
        )
        self.spatial_mlp = nn.Sequential(
            nn.Conv2d(2 * c, 2 * c // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * c // reduction, 2, 1),
        )

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = [rgb.mean(dim=(2, 3)), rgb.amax(dim=(2, 3)), aux.mean(dim=(2, 3)), aux.amax(dim=(2, 3))]
        wc = torch.sigmoid(self.channel_mlp(torch.cat(pooled, dim=1)))  # (B, 2C)
        wc_rgb, wc_aux = wc[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        ws = torch.sigmoid(self.spatial_mlp(torch.cat([rgb, aux], dim=1)))  # (B, 2, H, W)
        ws_rgb, ws_aux = ws.chunk(2, dim=1)  # (B, 1, H, W) each
        rgb_r = rgb + self.lambda_c * wc_aux * aux + self.lambda_s * ws_aux * aux
        aux_r = aux + self.lambda_c * wc_rgb * rgb + self.lambda_s * ws_rgb * rgb
        return rgb_r, aux_r


# fp32 probabilities below this are set to 0 in the context softmax: the context is a softmax
# over k's channel of sums over all N tokens, so most of its entries underflow to denormal
# numbers, and MKL's fp32 matrix products run 100-800x slower on denormal inputs (oneDNN's
# kernels, used in bf16, flush them). An entry below 1e-30 of the largest (1) changes no fp32
# sum that holds the largest.
CONTEXT_FLUSH_BELOW = 1e-30


def context_softmax(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """``logits.softmax(dim)`` without denormal numbers, forward and backward, in fp32 (entries
    below ``CONTEXT_FLUSH_BELOW`` before normalisation are 0); other dtypes: ``softmax``."""
    if logits.dtype != torch.float32:
        return logits.softmax(dim)
    e = torch.exp(logits - logits.detach().amax(dim, keepdim=True))  # softmax is shift-invariant
    e = e.masked_fill(e < CONTEXT_FLUSH_BELOW, 0.0)  # the gradient is 0 there: none reaches exp's output
    return e / e.sum(dim, keepdim=True)


class CrossExchange(nn.Module):
    """FFM stage 1: token maps (B, N, C) x 2 -> (B, N, C) x 2 by efficient cross-attention."""

    def __init__(self, channels: int, num_heads: int, flush_denormals: bool = True) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"frm_ffm: {channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.flush_denormals = flush_denormals  # context_softmax (True) or softmax
        self.scale = (channels // num_heads) ** -0.5
        self.embed = nn.ModuleList([nn.Linear(channels, 2 * channels) for _ in range(2)])
        self.kv = nn.ModuleList([nn.Linear(channels, 2 * channels, bias=False) for _ in range(2)])
        self.proj = nn.ModuleList([nn.Linear(2 * channels, channels) for _ in range(2)])
        self.norm = nn.ModuleList([nn.LayerNorm(channels) for _ in range(2)])

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape  # -> (B, h, N, C/h)
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, t_rgb: torch.Tensor, t_aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inter, resid, ctx = [], [], []
        for i, t in enumerate((t_rgb, t_aux)):
            i_s, u_s = F.relu(self.embed[i](t)).chunk(2, dim=-1)
            k, v = self.kv[i](i_s).chunk(2, dim=-1)
            k, v = self._heads(k), self._heads(v)
            logits = k.transpose(-2, -1) @ v * self.scale  # (B, h, d, d)
            ctx.append(context_softmax(logits, dim=-2) if self.flush_denormals else logits.softmax(dim=-2))
            inter.append(self._heads(i_s))
            resid.append(u_s)
        out = []
        for i, t in enumerate((t_rgb, t_aux)):
            a = inter[i] @ ctx[1 - i]  # queries of this modality, context of the other
            a = a.transpose(1, 2).reshape(t.shape)
            out.append(self.norm[i](t + self.proj[i](torch.cat([a, resid[i]], dim=-1))))
        return out[0], out[1]


class ChannelFuse(nn.Module):
    """FFM stage 2: (B, C, H, W) x 2 -> (B, C, H, W); norm is BatchNorm2d."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.reduce = nn.Conv2d(2 * c, c, 1)
        self.dwconv = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.expand = nn.Conv2d(c, c, 1)
        self.norm = nn.BatchNorm2d(c)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        h = self.reduce(torch.cat([rgb, aux], dim=1))
        return self.norm(h + self.expand(F.relu(self.dwconv(h))))


@register_fusion("frm_ffm")
class FRMFFMFusion(nn.Module):
    """FRM + FFM. forward(rgb, aux): (B, C, H, W) each -> FusionOutput of (B, C, H, W) maps."""

    @configurable
    def __init__(self, *, channels: int, stage: int, num_heads: int, reduction: int = 1,
                 lambda_c: float = 0.5, lambda_s: float = 0.5, feedback: bool = True,
                 flush_denormals: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.stage = stage
        self.feedback = feedback
        self.frm = FeatureRectify(channels, reduction, lambda_c, lambda_s)
        self.exchange = CrossExchange(channels, num_heads, flush_denormals)
        self.fuse = ChannelFuse(channels)

    @classmethod
    def from_config(cls, cfg, channels: int, stage: int) -> dict:
        opt = cfg.CADET.FUSION.FRM_FFM
        return {
            "channels": channels, "stage": stage, "num_heads": MIT_HEADS[stage - 1],
            "reduction": opt.REDUCTION, "lambda_c": opt.LAMBDA_C, "lambda_s": opt.LAMBDA_S,
            "feedback": opt.FEEDBACK, "flush_denormals": opt.FLUSH_DENORMALS,
        }

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> FusionOutput:
        b, c, h, w = rgb.shape
        rgb_r, aux_r = self.frm(rgb, aux)
        t_rgb, t_aux = self.exchange(rgb_r.flatten(2).transpose(1, 2), aux_r.flatten(2).transpose(1, 2))
        to_map = lambda t: t.transpose(1, 2).reshape(b, c, h, w)  # noqa: E731
        fused = self.fuse(to_map(t_rgb), to_map(t_aux))
        if self.feedback:
            return FusionOutput(fused, rgb_r, aux_r)
        return FusionOutput(fused, rgb, aux)




def expected_params(channels: int, reduction: int = 1) -> int:
    """Closed-form parameter count of ``frm_ffm`` (independent of the head count)."""
    c, r = channels, reduction
    frm_channel = (4 * c) * (4 * c // r) + 4 * c // r + (4 * c // r) * (2 * c) + 2 * c
    frm_spatial = (2 * c) * (2 * c // r) + 2 * c // r + (2 * c // r) * 2 + 2
    # per stream: embed C->2C (+bias), kv C->2C (no bias), proj 2C->C (+bias), LayerNorm (2C)
    exchange = 2 * (2 * c * c + 2 * c + 2 * c * c + 2 * c * c + c + 2 * c)
    # 1x1 2C->C (+bias), depthwise 3x3 (+bias), 1x1 C->C (+bias), BatchNorm (2C)
    fuse = 2 * c * c + c + 9 * c + c + c * c + c + 2 * c
    return frm_channel + frm_spatial + exchange + fuse
