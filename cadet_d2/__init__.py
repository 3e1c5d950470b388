"""cadet_d2: multimodal (RGB + thermal + event) object detection on Detectron2.

Importing the package registers its backbones, meta-architecture and fusion modules.
"""
from . import modeling  # noqa: F401  (registers BACKBONE / META_ARCH / FUSION entries)
from .config import add_cadet_config

__version__ = "0.1.0"
__all__ = ["add_cadet_config"]
