"""A fusion module of your own, outside the cadet_d2 package.

Name it in YAML (see examples/my_fusion.yaml):

    CADET:
      FUSION:
        NAME: "GatedSum"
        IMPORTS: ["examples/my_fusion.py"]   # or a dotted module name on sys.path
"""
import torch
from torch import nn

from cadet_d2.modeling.fusion import FUSION_REGISTRY, FusionOutput


@FUSION_REGISTRY.register()  # registered under its class name, "GatedSum"
class GatedSum(nn.Module):
    """fused = g * rgb + (1 - g) * aux with a learned per-channel gate g = sigmoid(p).

    Built as GatedSum(cfg, channels=C, stage=s); forward (B, C, H, W) x 2 -> FusionOutput.
    """

    def __init__(self, cfg, channels: int, stage: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> FusionOutput:
        g = torch.sigmoid(self.gate)
        return FusionOutput(g * rgb + (1 - g) * aux, rgb, aux)  # streams continue unchanged
