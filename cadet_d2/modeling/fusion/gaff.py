"""GAFF as the original study specified it (after Zhang et al., WACV 2021), ``gaff``.

For R, X (B, C, H, W), SE reduction r, guidance kernel k::

    R' = R * sigmoid(W2 ReLU(W1 GAP(R)))     W1: C -> C/r, W2: C/r -> C, with biases; one SE
    X' = X * sigmoid(W2 ReLU(W1 GAP(X)))     per modality
    g_R = sigmoid(conv_kxk(X')),  g_X = sigmoid(conv_kxk(R'))    (B, C, H, W), C -> C, bias,
    R_g = R' + R' * g_R,          X_g = X' + X' * g_X            padding k // 2
    fused = Conv1x1(2C -> C)([R_g, X_g])                            (merge_bottleneck=False)
    fused = Conv1x1(C -> C)(ReLU(Conv1x1(2C -> C)([R_g, X_g])))     (merge_bottleneck=True)

``inter_shared=True`` uses one guidance conv for both directions, else one each. The streams
continue unchanged. Logged per stage (training): mean g_R and g_X as
``fusion/stage{s}/gaff_guidance_rgb`` / ``..._aux``; the last maps are kept, detached, in
``self.last_guidance_rgb`` / ``self.last_guidance_aux`` (B, C, H, W).
"""
from __future__ import annotations

from typing import Optional

import torch
from detectron2.config import configurable
from torch import nn

from .base import register_fusion, FusionOutput, log_scalar


class SqueezeExcite(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): x * sigmoid(W2 ReLU(W1 GAP(x)))."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * s[:, :, None, None]


def _check_inter_kernel(k: int) -> None:
    if k not in (1, 3):
        raise ValueError(f"CADET.FUSION.GAFF.INTER_KERNEL = {k!r} must be 1 or 3")


@register_fusion("gaff")
class GAFFFusion(nn.Module):
    """GAFF. forward(rgb, aux): (B, C, H, W) each -> FusionOutput(fused, rgb, aux), streams unchanged."""

    @classmethod
    def check_config(cls, cfg, name: str) -> None:
        _check_inter_kernel(cfg.CADET.FUSION.GAFF.INTER_KERNEL)

    @configurable
    def __init__(self, *, channels: int, stage: int, se_reduction: int = 4,
                 inter_shared: bool = False, inter_kernel: int = 1,
                 merge_bottleneck: bool = False) -> None:
        super().__init__()
        _check_inter_kernel(inter_kernel)
        c = channels
        self.channels = channels
        self.stage = stage
        self.se_rgb = SqueezeExcite(c, se_reduction)
        self.se_aux = SqueezeExcite(c, se_reduction)
        make = lambda: nn.Conv2d(c, c, inter_kernel, padding=inter_kernel // 2)  # noqa: E731
        self.guide_rgb = make()  # applied to X', guides R
        self.guide_aux = self.guide_rgb if inter_shared else make()  # applied to R', guides X
        if merge_bottleneck:
            self.merge = nn.Sequential(nn.Conv2d(2 * c, c, 1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1))
        else:
            self.merge = nn.Conv2d(2 * c, c, 1)
        self.last_guidance_rgb: Optional[torch.Tensor] = None
        self.last_guidance_aux: Optional[torch.Tensor] = None

    @classmethod
    def from_config(cls, cfg, channels: int, stage: int) -> dict:
        opt = cfg.CADET.FUSION.GAFF
        return {
            "channels": channels, "stage": stage, "se_reduction": opt.SE_REDUCTION,
            "inter_shared": opt.INTER_SHARED, "inter_kernel": opt.INTER_KERNEL,
            "merge_bottleneck": opt.MERGE_BOTTLENECK,
        }

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> FusionOutput:
        rgb_e, aux_e = self.se_rgb(rgb), self.se_aux(aux)
        g_rgb = torch.sigmoid(self.guide_rgb(aux_e))
        g_aux = torch.sigmoid(self.guide_aux(rgb_e))
        self.last_guidance_rgb, self.last_guidance_aux = g_rgb.detach(), g_aux.detach()
        log_scalar(f"fusion/stage{self.stage}/gaff_guidance_rgb", g_rgb.mean())
        log_scalar(f"fusion/stage{self.stage}/gaff_guidance_aux", g_aux.mean())
        fused = self.merge(torch.cat([rgb_e + rgb_e * g_rgb, aux_e + aux_e * g_aux], dim=1))
        return FusionOutput(fused, rgb, aux)




def expected_params(channels: int, se_reduction: int = 4, inter_shared: bool = False,
                    inter_kernel: int = 1, merge_bottleneck: bool = False) -> int:
    """Closed-form parameter count of ``gaff``."""
    c, h = channels, channels // se_reduction
    se = 2 * (c * h + h + h * c + c)
    inter = (1 if inter_shared else 2) * (c * c * inter_kernel ** 2 + c)
    merge = 2 * c * c + c + (c * c + c if merge_bottleneck else 0)
    return se + inter + merge
