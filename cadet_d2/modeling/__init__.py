from . import fusion  # noqa: F401  (registers the fusion modules)
from .backbone import DualStreamMiT, MiT, SingleStreamMiT, build_dual_mit_fpn_backbone, build_mit_fpn_backbone
from .meta_arch import CadetRCNN

__all__ = ["MiT", "SingleStreamMiT", "DualStreamMiT", "CadetRCNN",
           "build_mit_fpn_backbone", "build_dual_mit_fpn_backbone"]
