from .dual import DualStreamMiT, build_dual_mit_fpn_backbone
from .mit import MIT_SPECS, MiT, mit_b0, mit_b1, mit_b2, mit_b4, mit_b5
from .single import SingleStreamMiT, build_mit_fpn_backbone

__all__ = [
    "MiT", "MIT_SPECS", "mit_b0", "mit_b1", "mit_b2", "mit_b4", "mit_b5",
    "SingleStreamMiT", "DualStreamMiT", "build_mit_fpn_backbone", "build_dual_mit_fpn_backbone",
]
