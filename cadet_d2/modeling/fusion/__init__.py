"""Fusion modules of the dual-stream backbone. Importing this package registers the built-in
modules: ``sum``, ``concat``, ``frm_ffm``, ``cssa``, ``cssa_learnable``, ``cssa_soft``, ``gaff``,
``hybrid``."""
from . import base, cssa, cssa_variants, frm_ffm, gaff, hybrid, simple  # noqa: F401  (registers the modules)
from .base import (
    FUSION_REGISTRY,
    FusionOutput,
    build_fusion,
    check_fusion_config,
    import_fusion_modules,
    log_scalar,
    register_fusion,
    registered_fusions,
)

__all__ = [
    "FUSION_REGISTRY",
    "FusionOutput",
    "build_fusion",
    "check_fusion_config",
    "import_fusion_modules",
    "log_scalar",
    "register_fusion",
    "registered_fusions",
]
