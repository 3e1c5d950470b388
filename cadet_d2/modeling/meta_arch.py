"""``CadetRCNN``: Detectron2's GeneralizedRCNN for N-channel multimodal input."""
from __future__ import annotations

import logging

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from ..layout import modality_slices

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class CadetRCNN(GeneralizedRCNN):
    """Faster R-CNN over (C, H, W) images with C = the channels of ``CADET.INPUT.MODALITIES``.

    Same inputs and outputs as GeneralizedRCNN; ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` hold one
    value per channel (checked by ``validate_cadet_config``). Training visualisation (``VIS_PERIOD``) draws on the RGB channels, or on
    the first channel as grey when there is no RGB.

    ``rgb_detector`` (``CADET.INIT.RGB_DETECTOR``, used only when ``MODEL.WEIGHTS`` is empty): a
    single-stream RGB checkpoint the dual-stream model starts from (``init_from_rgb.py``); its
    report is kept in ``self.rgb_init_report``. A checkpoint loaded later (``MODEL.WEIGHTS``,
    ``--resume``) replaces these weights as it replaces any initialisation.
    """

    @configurable
    def __init__(self, *, vis_channels: list[int], rgb_detector: str = "", **kwargs):
        super().__init__(**kwargs)
        self.vis_channels = list(vis_channels)
        self.rgb_init_report = None
        if rgb_detector:
            from .init_from_rgb import init_from_rgb_detector

            self.rgb_init_report = init_from_rgb_detector(self, rgb_detector)

    @classmethod
    def from_config(cls, cfg) -> dict:
        # MODEL.PIXEL_MEAN/STD (one value > 0 per input channel) are checked by validate_cadet_config
        rgb = modality_slices(cfg).get("rgb")
        ret = super().from_config(cfg)
        ret["vis_channels"] = list(range(rgb.start, rgb.stop)) if rgb else [0, 0, 0]
        ret["input_format"] = "RGB"
        ret["rgb_detector"] = "" if cfg.MODEL.WEIGHTS else cfg.CADET.INIT.RGB_DETECTOR
        if cfg.MODEL.WEIGHTS and cfg.CADET.INIT.RGB_DETECTOR:
            logger.info(f"[cadet] CADET.INIT.RGB_DETECTOR not used: MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} is loaded instead")
        return ret

    def visualize_training(self, batched_inputs, proposals):
        inputs = [dict(x, image=x["image"][self.vis_channels]) for x in batched_inputs]
        super().visualize_training(inputs, proposals)
