"""Detectron2's ROIPooler with the RoIAlign of :mod:`cadet_d2.modeling.roi_align` (same output,
multi-threaded backward)."""
from __future__ import annotations

from detectron2.modeling.poolers import ROIPooler
from torch import nn

from .roi_align import FastBackwardROIAlign

__all__ = ["FastBackwardROIPooler"]


class FastBackwardROIPooler(ROIPooler):
    """:class:`ROIPooler` (same arguments, same output, no parameters) whose "ROIAlign" and
    "ROIAlignV2" levels are :class:`FastBackwardROIAlign`; other pooler types stay Detectron2's."""

    def __init__(self, output_size, scales, sampling_ratio, pooler_type, canonical_box_size=224, canonical_level=4):
        super().__init__(output_size, scales, sampling_ratio, pooler_type, canonical_box_size=canonical_box_size,
                         canonical_level=canonical_level)
        if pooler_type in ("ROIAlign", "ROIAlignV2"):
            self.level_poolers = nn.ModuleList(
                FastBackwardROIAlign(self.output_size, spatial_scale=scale, sampling_ratio=sampling_ratio,
                                     aligned=pooler_type == "ROIAlignV2")
                for scale in scales)
