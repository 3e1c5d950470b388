"""Reference fusions: ``sum`` (F = R + X) and ``concat`` (1x1 conv 2C -> C on [R, X]).

Both return the stream maps unchanged (no feedback into the MiT streams).
"""
from __future__ import annotations

import torch
from detectron2.config import configurable
from torch import nn

from .base import register_fusion, FusionOutput


class _PlainFusion(nn.Module):
    """A module with no options: built from (channels, stage) alone."""

    @configurable
    def __init__(self, *, channels: int, stage: int) -> None:
        super().__init__()
        self.channels = channels
        self.stage = stage

    @classmethod
    def from_config(cls, cfg, channels: int, stage: int) -> dict:
        return {"channels": channels, "stage": stage}


@register_fusion("sum")
class SumFusion(_PlainFusion):
    """F = R + X. No parameters.

    forward(rgb, aux): rgb, aux (B, C, H, W) -> FusionOutput(fused (B, C, H, W), rgb, aux).
    """

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> FusionOutput:
        return FusionOutput(rgb + aux, rgb, aux)


@register_fusion("concat")
class ConcatFusion(_PlainFusion):
    """F = Conv1x1([R, X]) with a 2C -> C kernel and bias.

    forward(rgb, aux): rgb, aux (B, C, H, W) -> FusionOutput(fused (B, C, H, W), rgb, aux).
    """

    @configurable
    def __init__(self, *, channels: int, stage: int) -> None:
        super().__init__(channels=channels, stage=stage)
        self.proj = nn.Conv2d(2 * channels, channels, kernel_size=1, bias=True)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> FusionOutput:
        return FusionOutput(self.proj(torch.cat([rgb, aux], dim=1)), rgb, aux)

    @torch.no_grad()
    def start_as_rgb(self) -> None:
        """Set the kernel to [I, 0] and the bias to 0, so that F = R exactly (the fused map is
        the RGB stream's: a dual model started from an RGB detector is that detector)."""
        self.proj.weight.zero_()
        self.proj.weight[:, : self.channels, 0, 0].copy_(torch.eye(self.channels))
        self.proj.bias.zero_()


def expected_params(channels: int, name: str = "concat") -> int:
    """Parameter count of ``sum`` (0) or ``concat`` (2C*C weights + C biases)."""
    if name == "sum":
        return 0
    if name == "concat":
        return 2 * channels * channels + channels
    raise KeyError(name)
