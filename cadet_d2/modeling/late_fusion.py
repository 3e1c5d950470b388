"""``LateFusionRCNN``: one full detector per modality group, their detections merged per image."""
from __future__ import annotations

import logging

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import nn

from ..layout import group_channels, group_modalities, modality_slices
from ..utils.io import require_weights_file
from ..utils.safe_load import load_torch_weights
from .meta_arch import CadetRCNN
from .merge import MERGE_RULES

logger = logging.getLogger(__name__)


def branch_name(group: str) -> str:
    """``"thermal+event"`` -> ``"thermal_event"`` (the branch's module name and loss prefix)."""
    return "_".join(group_modalities(group))


def branch_cfg(cfg, group: str):
    """The config of one branch: a single-stream ``CadetRCNN`` over ``group``'s modalities, with
    their slice of ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``."""
    channels = group_channels(group, modality_slices(cfg), "CADET.LATE.BRANCHES")
    c = cfg.clone()
    c.defrost()
    c.MODEL.META_ARCHITECTURE = "CadetRCNN"
    c.MODEL.BACKBONE.NAME = "build_mit_fpn_backbone"
    c.MODEL.PIXEL_MEAN = [cfg.MODEL.PIXEL_MEAN[i] for i in channels]
    c.MODEL.PIXEL_STD = [cfg.MODEL.PIXEL_STD[i] for i in channels]
    c.MODEL.WEIGHTS = ""
    c.CADET.INIT.RGB_DETECTOR = ""
    c.CADET.INPUT.MODALITIES = group_modalities(group)
    return c, channels


def load_branch(branch: nn.Module, path: str) -> dict:
    """Load a single-stream checkpoint (``{"model": state}`` as the trainer writes, or a bare state
    dict) into ``branch``. Returns ``{"loaded", "missing", "unexpected"}`` key lists; a tensor whose
    shape differs from the branch's stops with the file and key named."""
    require_weights_file("CADET.LATE.WEIGHTS", path)
    ckpt = load_torch_weights(path)  # weights only; a damaged or unsafe file stops naming it
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"CADET.LATE.WEIGHTS: {path} holds no state dict")
    own = branch.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"CADET.LATE.WEIGHTS: {path} does not fit its branch (same MiT size, classes, FPN and "
                         f"heads, single-stream, its modalities only): {bad[:5]}")
    result = branch.load_state_dict(state, strict=False)
    return {"loaded": sorted(k for k in state if k in own), "missing": sorted(result.missing_keys),
            "unexpected": sorted(result.unexpected_keys)}


@META_ARCH_REGISTRY.register()
class LateFusionRCNN(nn.Module):
    """Late (decision-level) fusion: one ``CadetRCNN`` per ``CADET.LATE.BRANCHES`` entry.

    Input: Detectron2's list of dicts with ``image`` (C, H, W), C = the channels of
    ``CADET.INPUT.MODALITIES``; branch b sees only its channels ``channels[b]``.
    Training: the branches' loss dicts, keys prefixed ``<branch>/`` (e.g. ``rgb/loss_cls``); their
    sum is the loss. A branch learns only from the images whose input it still sees: an image
    whose ``dropped_channels`` (modality dropout, set by the mapper) cover all of a branch's
    channels is left out of that branch's batch, since its boxes cannot be found in a blanked
    input; a branch left with no image runs on the whole batch with its losses times 0 (same
    loss keys, every parameter in the graph, as DDP needs). Inference: each branch detects and
    postprocesses to the original size, then ``merge`` (``CADET.LATE.MERGE``, ``modeling/merge.py``) fuses the detections per image:
    ``[{"instances": Instances(pred_boxes, scores, pred_classes)}]`` as GeneralizedRCNN returns.
    ``weights``: per-branch checkpoint paths ("" = none), loaded at build; reports in ``weights_report``.
    """

    @configurable
    def __init__(self, *, branches: dict[str, nn.Module], channels: dict[str, list[int]], merge: str,
                 iou_thresh: float, max_dets: int, weights: dict[str, str] | None = None):
        super().__init__()
        if set(branches) != set(channels):
            raise ValueError(f"branches {list(branches)} and channels {list(channels)} name different branches")
        if merge not in MERGE_RULES:
            raise ValueError(f"merge {merge!r} is not a rule; choose from {list(MERGE_RULES)}")
        self.branches = nn.ModuleDict(branches)
        self.channels = {k: list(v) for k, v in channels.items()}
        self.merge_name, self.merge = merge, MERGE_RULES[merge]
        self.iou_thresh, self.max_dets = iou_thresh, max_dets
        self.weights_report = {}
        for name, path in (weights or {}).items():
            if path:
                report = load_branch(self.branches[name], path)
                self.weights_report[name] = report
                logger.info(f"[cadet] late fusion branch {name}: {len(report['loaded'])} tensors loaded from {path}")
                if report["missing"] or report["unexpected"]:
                    logger.warning(f"[cadet] late fusion branch {name} from {path}: missing {report['missing']}, "
                                   f"unexpected {report['unexpected']}")

    @classmethod
    def from_config(cls, cfg) -> dict:
        # CADET.LATE.BRANCHES / WEIGHTS are checked by validate_cadet_config
        branches, channels, weights = {}, {}, {}
        paths = list(cfg.CADET.LATE.WEIGHTS) or [""] * len(cfg.CADET.LATE.BRANCHES)
        for group, path in zip(cfg.CADET.LATE.BRANCHES, paths):
            name = branch_name(group)
            sub, channels[name] = branch_cfg(cfg, group)
            branches[name] = CadetRCNN(sub)
            weights[name] = path
        return {"branches": branches, "channels": channels, "merge": cfg.CADET.LATE.MERGE,
                "iou_thresh": cfg.CADET.LATE.IOU_THRESH, "max_dets": cfg.TEST.DETECTIONS_PER_IMAGE,
                "weights": weights}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def branch_inputs(self, batched_inputs: list[dict], name: str) -> list[dict]:
        """``batched_inputs`` with each image cut to branch ``name``'s channels."""
        return [dict(x, image=x["image"][self.channels[name]]) for x in batched_inputs]

    def sees(self, x: dict, name: str) -> bool:
        """Whether branch ``name`` still sees part of its input in ``x`` (modality dropout may
        have blanked all of its channels: ``x["dropped_channels"]``)."""
        return not set(self.channels[name]) <= set(x.get("dropped_channels", ()))

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        losses = {}
        for name, branch in self.branches.items():
            seen = [x for x in batched_inputs if self.sees(x, name)]
            scale = 1.0 if seen else 0.0
            branch_losses = branch(self.branch_inputs(seen or batched_inputs, name))
            losses.update({f"{name}/{k}": v * scale for k, v in branch_losses.items()})
        return losses

    def inference(self, batched_inputs: list[dict], do_postprocess: bool = True) -> list:
        """Each branch's detections, merged per image: ``[{"instances": ...}]`` in original-image
        pixels, or (``do_postprocess`` False, as GeneralizedRCNN) ``[Instances]`` in the pixels of
        the resized input (both branches see the same image size)."""
        per_branch = [branch.inference(self.branch_inputs(batched_inputs, name), do_postprocess=do_postprocess)
                      for name, branch in self.branches.items()]
        if not do_postprocess:
            per_branch = [[{"instances": x} for x in r] for r in per_branch]
        out = []
        for i in range(len(batched_inputs)):
            insts = [r[i]["instances"] for r in per_branch]
            dets = [(x.pred_boxes.tensor, x.scores, x.pred_classes) for x in insts]
            boxes, scores, classes = self.merge(dets, self.iou_thresh, self.max_dets)
            merged = Instances(insts[0].image_size)
            merged.pred_boxes, merged.scores, merged.pred_classes = Boxes(boxes), scores, classes
            out.append({"instances": merged} if do_postprocess else merged)
        return out
