"""Parameter counts of the fusion modules per MiT stage, as a markdown table.

``fusion_param_table(cfg)`` builds every registered fusion module (with ``cfg``'s
``CADET.FUSION.*`` options) for each MiT channel set and counts its parameters: one column per
stage set, the sum over the stages in the set (fusion parameters only; the stages outside the
set use ``CADET.FUSION.DEFAULT`` and are not counted).
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..layout import MIT_SPECS, MIT_SIZES

MIT_CHANNEL_SETS = {"b0": MIT_SPECS["b0"]["embed_dims"], "b1-b5": MIT_SPECS["b1"]["embed_dims"]}
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


DETECTOR_ROWS = (  # (MiT size, fusion at STAGES, STAGES); other stages use frm_ffm
    *[(size, "frm_ffm", (1, 2, 3, 4)) for size in MIT_SIZES],
    *[("b1", name, (1, 2, 3, 4)) for name in ("sum", "concat", "cssa", "gaff")],
    *[("b1", "cssa", s) for s in ((1,), (4,), (3, 4))],
    *[("b1", "gaff", s) for s in ((1,), (4,), (2, 3, 4))],
)


def detector_stats(cfg, height: int = 320, width: int = 416, flops: bool = True) -> dict:
    """Total and fusion-only parameters of the detector ``cfg`` describes (``fused``: whether its
    backbone has fusion modules, i.e. two streams), and its GFLOPs for
    one (C, height, width) image at inference (fvcore, via Detectron2's FlopCountAnalysis)."""
    import torch
    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    detectors = list(model.branches.values()) if hasattr(model, "branches") else [model]  # late fusion: one per branch
    bottom_ups = [d.backbone.bottom_up for d in detectors]
    stats = {"params": count_params(model), "backbone_params": sum(count_params(b) for b in bottom_ups),
             "fusion_params": sum(count_params(b.fusions) for b in bottom_ups if getattr(b, "fusions", None) is not None),
             "fused": any(getattr(b, "fusions", None) is not None for b in bottom_ups)}
    if flops:
        from fvcore.nn import FlopCountAnalysis

        image = torch.rand(len(cfg.MODEL.PIXEL_MEAN), height, width) * 255
        with torch.no_grad():
            counter = FlopCountAnalysis(_tensor_outputs(model), (image,))
            counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            stats["gflops"] = counter.total() / 1e9
    return stats


def _tensor_outputs(model):
    """Wrap a Detectron2 model so that fvcore can trace it: (C, H, W) -> (boxes, scores)."""
    import torch

    class TensorOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image):
            out = self.model.inference([{"image": image}], do_postprocess=False)[0]
            return out.pred_boxes.tensor, out.scores

    return TensorOutputs()



def detector_table(base_cfg, rows=DETECTOR_ROWS, height: int = 320, width: int = 416, flops: bool = True) -> str:
    """Markdown table: MiT size x fusion x stage set -> parameters (total, backbone, fusion), GFLOPs."""
    lines = [f"| MiT | fusion | stages | total params (M) | backbone (M) | fusion params | GFLOPs @ {height}x{width} |",
             "|---|---|---|---:|---:|---:|---:|"]
    for size, name, stages in rows:
        cfg = base_cfg.clone()
        cfg.defrost()
        cfg.CADET.BACKBONE.SIZE, cfg.CADET.FUSION.NAME = size, name
        cfg.CADET.FUSION.STAGES, cfg.CADET.FUSION.DEFAULT = list(stages), "frm_ffm"
        s = detector_stats(cfg, height, width, flops)
        g = f"{s['gflops']:.1f}" if flops else "-"
        lines.append(f"| {size} | {name} | {list(stages)} | {s['params'] / 1e6:.2f} | "
                     f"{s['backbone_params'] / 1e6:.2f} | {s['fusion_params']:,} | {g} |")
    return "\n".join(lines) + "\n"
