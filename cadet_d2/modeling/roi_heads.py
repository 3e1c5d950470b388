"""``CadetROIHeads``: Detectron2's StandardROIHeads whose box pooler has the multi-threaded RoIAlign
backward of :mod:`cadet_d2.modeling.roi_align` when ``CADET.ROI.FAST_ALIGN_BACKWARD`` is on. Same
modules, parameters and checkpoint keys as StandardROIHeads."""
from __future__ import annotations

from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads

from .poolers import FastBackwardROIPooler

__all__ = ["CadetROIHeads"]


@ROI_HEADS_REGISTRY.register()
class CadetROIHeads(StandardROIHeads):
    """StandardROIHeads; box pooler :class:`FastBackwardROIPooler` (CADET.ROI.FAST_ALIGN_BACKWARD)."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        if cfg.CADET.ROI.FAST_ALIGN_BACKWARD:
            in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
            ret["box_pooler"] = FastBackwardROIPooler(
                output_size=cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION,
                scales=tuple(1.0 / input_shape[k].stride for k in in_features),
                sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
                pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
            )
        return ret
