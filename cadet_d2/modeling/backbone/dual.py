"""Dual-stream MiT backbone: an RGB stream, an auxiliary stream, a fusion module per stage."""
from __future__ import annotations

import logging

import torch
import torch.utils.checkpoint
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ...layout import modality_slices
from ..fusion import build_fusion
from ..fusion.base import fusion_names, fusion_output
from .common import OUT_NAMES, MiTBackbone, build_stream, wrap_fpn
from .mit import MiT
from .single import SingleStreamMiT, warn_unused_fusion

logger = logging.getLogger(__name__)


class DualStreamMiT(MiTBackbone):
    """Two MiT streams fused at every stage.

    Input (B, C_in, H, W): channels ``rgb_channels`` go to the RGB stream, ``aux_channels``
    (thermal + event by default) to the auxiliary stream. At stage i both streams give
    (B, C_i, H / s_i, W / s_i); ``fusions[i]`` turns them into the fused map for the FPN and
    into the maps that continue in each stream (rectified by modules with feedback, e.g. CMX's
    FRM; unchanged otherwise). Output: {res2..res5} fused maps, strides 4, 8, 16, 32.
    """

    def __init__(
        self,
        rgb_stream: MiT,
        aux_stream: MiT,
        fusions: list[nn.Module],
        rgb_channels: list[int],
        aux_channels: list[int],
        out_features: list[str],
        checkpoint_stages: tuple[int, ...] = (),
    ):
        super().__init__()
        if rgb_stream.embed_dims != aux_stream.embed_dims:
            raise ValueError("the two streams must have the same MiT size")
        self.rgb_stream, self.aux_stream = rgb_stream, aux_stream
        self.fusions = nn.ModuleList(fusions)
        self.register_buffer("rgb_index", torch.tensor(rgb_channels), persistent=False)
        self.register_buffer("aux_index", torch.tensor(aux_channels), persistent=False)
        self._set_outputs(rgb_stream, out_features)
        # Stages (1-4) whose fusion module is recomputed in backward (activation checkpointing,
        # CADET.BACKBONE.CHECKPOINT_STAGES; the streams' blocks are set in build_stream).
        self.checkpoint_stages = tuple(checkpoint_stages)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb = x.index_select(1, self.rgb_index)
        aux = x.index_select(1, self.aux_index)
        outs = {}
        for i, (name, fusion) in enumerate(zip(OUT_NAMES, self.fusions)):
            rgb = self.rgb_stream.forward_stage(i, rgb)
            aux = self.aux_stream.forward_stage(i, aux)
            if (i + 1) in self.checkpoint_stages and torch.is_grad_enabled():
                out = torch.utils.checkpoint.checkpoint(fusion, rgb, aux, use_reentrant=False)
            else:
                out = fusion(rgb, aux)
            fused, rgb, aux = fusion_output(fusion, out, rgb, aux)
            if name in self.out_features:
                outs[name] = fused
            if len(outs) == len(self.out_features):
                break
        return outs

def build_dual_mit(cfg) -> Backbone:
    """The bottom-up part: dual-stream MiT, or one stream when only RGB or only auxiliary
    modalities are configured (modality ablations need no other config)."""
    slices = modality_slices(cfg)
    channels = list(range(sum(s.stop - s.start for s in slices.values())))
    rgb = list(range(slices["rgb"].start, slices["rgb"].stop)) if "rgb" in slices else []
    aux = [c for c in channels if c not in rgb]
    out_features = cfg.CADET.BACKBONE.OUT_FEATURES
    if not rgb or not aux:
        logger.info(f"[cadet] modalities {list(slices)}: one stream, no fusion")
        warn_unused_fusion(cfg, f"CADET.INPUT.MODALITIES {list(slices)} give one stream")
        return SingleStreamMiT(build_stream(cfg, len(channels)), out_features)
    rgb_stream, aux_stream = build_stream(cfg, len(rgb)), build_stream(cfg, len(aux))
    names = fusion_names(cfg)
    fusions = [build_fusion(cfg, n, c, stage=i + 1) for i, (n, c) in enumerate(zip(names, rgb_stream.embed_dims))]
    logger.info(f"[cadet] dual-stream MiT-{cfg.CADET.BACKBONE.SIZE}: rgb channels {rgb}, aux channels {aux}, "
                f"fusion per stage {names}")
    return DualStreamMiT(rgb_stream, aux_stream, fusions, rgb, aux, out_features,
                         checkpoint_stages=tuple(cfg.CADET.BACKBONE.CHECKPOINT_STAGES))


@BACKBONE_REGISTRY.register()
def build_dual_mit_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Dual-stream MiT with per-stage fusion, then Detectron2's FPN."""
    return wrap_fpn(cfg, build_dual_mit(cfg))
