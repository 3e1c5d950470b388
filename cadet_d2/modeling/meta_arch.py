"""``CadetRCNN``: Detectron2's GeneralizedRCNN for N-channel multimodal input."""
from __future__ import annotations

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from ..layout import modality_slices


@META_ARCH_REGISTRY.register()
class CadetRCNN(GeneralizedRCNN):
    """Faster R-CNN over (C, H, W) images with C = the channels of ``CADET.INPUT.MODALITIES``.

    Same inputs and outputs as GeneralizedRCNN; ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` hold one
    value per channel (checked by ``validate_cadet_config``). Training visualisation (``VIS_PERIOD``) draws on the RGB channels, or on
    the first channel as grey when there is no RGB.
    """

    @configurable
    def __init__(self, *, vis_channels: list[int], **kwargs):
        super().__init__(**kwargs)
        self.vis_channels = list(vis_channels)

    @classmethod
    def from_config(cls, cfg) -> dict:
        # MODEL.PIXEL_MEAN/STD (one value > 0 per input channel) are checked by validate_cadet_config
        rgb = modality_slices(cfg).get("rgb")
        ret = super().from_config(cfg)
        ret["vis_channels"] = list(range(rgb.start, rgb.stop)) if rgb else [0, 0, 0]
        ret["input_format"] = "RGB"
        return ret

    def visualize_training(self, batched_inputs, proposals):
        inputs = [dict(x, image=x["image"][self.vis_channels]) for x in batched_inputs]
        super().visualize_training(inputs, proposals)
