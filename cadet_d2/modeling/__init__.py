from . import fusion  # noqa: F401  (registers the fusion modules)
from .backbone import DualStreamMiT, MiT, SingleStreamMiT, build_dual_mit_fpn_backbone, build_mit_fpn_backbone
from .meta_arch import CadetRCNN
from .late_fusion import LateFusionRCNN
from .roi_heads import CadetROIHeads

__all__ = ["MiT", "SingleStreamMiT", "DualStreamMiT", "CadetRCNN", "LateFusionRCNN", "CadetROIHeads",
           "build_mit_fpn_backbone", "build_dual_mit_fpn_backbone"]
