"""cadet_d2: multimodal (RGB + thermal + event) object detection on Detectron2.

Importing the package registers its backbones, meta-architecture and fusion modules.
"""
import warnings

with warnings.catch_warnings():  # Detectron2 and fvcore script functions at import (deprecated in torch)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import detectron2.modeling  # noqa: F401

from . import modeling  # noqa: F401  (registers BACKBONE / META_ARCH / FUSION entries)
from .config import add_cadet_config

__version__ = "0.1.0"
__all__ = ["add_cadet_config"]
