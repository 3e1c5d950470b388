"""``hybrid``: one fusion module at the early stages and another at the late ones, from one config.

With ``CADET.FUSION.NAME: hybrid`` a stage s in ``CADET.FUSION.HYBRID.EARLY_STAGES`` gets
``HYBRID.EARLY`` (default ``cssa``: cheap channel switching on the high-resolution maps) and
every other stage gets ``HYBRID.LATE`` (default ``gaff``). Each built module keeps its own
options (``CADET.FUSION.CSSA.*``, ``CADET.FUSION.GAFF.*``) and its own class, so checkpoints,
parameter counts and fusion maps are those of the module used at that stage.

(``NAME: cssa, STAGES: [1, 2], DEFAULT: gaff`` builds the same network; ``hybrid`` names the
arm and keeps the split in one key.)
"""
from __future__ import annotations

from torch import nn

from .base import build_fusion, register_fusion


@register_fusion("hybrid")
def build_hybrid(cfg, channels: int, stage: int) -> nn.Module:
    """The ``HYBRID.EARLY`` module at ``HYBRID.EARLY_STAGES``, else ``HYBRID.LATE`` (neither may
    be ``hybrid``: ``validate_cadet_config`` refuses it when the config is loaded)."""
    opt = cfg.CADET.FUSION.HYBRID
    name = opt.EARLY if stage in opt.EARLY_STAGES else opt.LATE
    return build_fusion(cfg, name, channels, stage)
