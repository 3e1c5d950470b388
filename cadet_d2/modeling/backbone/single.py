"""Single-stream MiT backbone: one stream over all input channels (early fusion, or one modality)."""
from __future__ import annotations

import logging

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .common import OUT_NAMES, MiTBackbone, build_stream, wrap_fpn
from .mit import MiT

logger = logging.getLogger(__name__)


class SingleStreamMiT(MiTBackbone):
    """(B, C_in, H, W) -> {res2..res5}: (B, C_i, H / s, W / s) for s = 4, 8, 16, 32."""

    def __init__(self, stream: MiT, out_features: list[str]):
        super().__init__()
        self.stream = stream
        self._set_outputs(stream, out_features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: f for n, f in zip(OUT_NAMES, self.stream(x)) if n in self.out_features}


def warn_unused_fusion(cfg, why: str) -> None:
    """A warning when ``CADET.FUSION`` asks for fusion modules that a one-stream backbone does not
    have (e.g. ``CADET.FUSION.NAME cssa`` on an early-fusion config trains no CSSA)."""
    from detectron2.config import get_cfg

    from ...config import add_cadet_config

    f, default = cfg.CADET.FUSION, add_cadet_config(get_cfg()).CADET.FUSION
    if (f.NAME, f.DEFAULT, sorted(f.STAGES)) != (default.NAME, default.DEFAULT, sorted(default.STAGES)):
        logger.warning(f"[cadet] CADET.FUSION (NAME {f.NAME}, STAGES {list(f.STAGES)}, DEFAULT {f.DEFAULT}) is unused: "
                       f"{why}, without fusion modules; a dual-stream model needs MODEL.BACKBONE.NAME "
                       "build_dual_mit_fpn_backbone and rgb plus another modality")


@BACKBONE_REGISTRY.register()
def build_mit_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Early fusion: one MiT over all channels of ``CADET.INPUT.MODALITIES``, then FPN."""
    warn_unused_fusion(cfg, f"MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME} is one MiT stream over all channels")
    stream = build_stream(cfg, input_shape.channels)
    return wrap_fpn(cfg, SingleStreamMiT(stream, cfg.CADET.BACKBONE.OUT_FEATURES))
