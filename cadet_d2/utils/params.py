"""Parameter counts of the fusion modules per MiT stage, as a markdown table.

``fusion_param_table(cfg)`` builds every registered fusion module (with ``cfg``'s
``CADET.FUSION.*`` options) for each MiT channel set and counts its parameters: one column per
stage set, the sum over the stages in the set (fusion parameters only; the stages outside the
set use ``CADET.FUSION.DEFAULT`` and are not counted).
"""
from __future__ import annotations

from typing import Optional, Sequence

MIT_CHANNEL_SETS = {"b0": (32, 64, 160, 256), "b1-b5": (64, 128, 320, 512)}
STAGE_SETS = ((1,), (2,), (3,), (4,), (2, 3), (3, 4), (1, 2, 3, 4))


def count_params(module) -> int:
    """Number of parameters of an ``nn.Module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def fusion_param_counts(cfg=None, names: Optional[Sequence[str]] = None,
                        channel_sets: Optional[dict] = None) -> dict[str, dict[str, list[int]]]:
    """``{channel set: {module name: [params at stage 1, 2, 3, 4]}}``.

    ``cfg`` defaults to Detectron2's ``get_cfg()`` plus ``add_cadet_config``; ``names`` to every
    registered fusion module; ``channel_sets`` to :data:`MIT_CHANNEL_SETS`.
    """
    from cadet_d2.modeling.fusion import build_fusion, import_fusion_modules, registered_fusions

    if cfg is None:
        from detectron2.config import get_cfg

        from cadet_d2.config import add_cadet_config

        cfg = add_cadet_config(get_cfg())
    import_fusion_modules(cfg.CADET.FUSION.IMPORTS)
    names = list(names) if names is not None else registered_fusions()
    channel_sets = channel_sets or MIT_CHANNEL_SETS
    return {
        set_name: {
            name: [count_params(build_fusion(cfg, name, c, stage))
                   for stage, c in enumerate(channels, start=1)]
            for name in names
        }
        for set_name, channels in channel_sets.items()
    }


def fusion_param_table(cfg=None, names: Optional[Sequence[str]] = None,
                       channel_sets: Optional[dict] = None,
                       stage_sets: Sequence[Sequence[int]] = STAGE_SETS) -> str:
    """Markdown: one table per channel set, a row per module, a column per stage set."""
    channel_sets = channel_sets or MIT_CHANNEL_SETS
    counts = fusion_param_counts(cfg, names, channel_sets)
    lines = []
    for set_name, channels in channel_sets.items():
        lines.append(f"### MiT {set_name} (channels {', '.join(map(str, channels))})")
        lines.append("")
        header = [f"stages {list(s)}" if len(s) > 1 else f"stage {s[0]} (C={channels[s[0] - 1]})"
                  for s in stage_sets]
        lines.append("| module | " + " | ".join(header) + " |")
        lines.append("|---|" + "---:|" * len(stage_sets))
        for name, per_stage in counts[set_name].items():
            cells = [f"{sum(per_stage[i - 1] for i in s):,}" for s in stage_sets]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
