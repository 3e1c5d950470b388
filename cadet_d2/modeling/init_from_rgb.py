"""Start a dual-stream detector from a single-stream RGB detector of this project
(``CADET.INIT.RGB_DETECTOR``; applied by :class:`CadetRCNN` when ``MODEL.WEIGHTS`` is empty).

Checkpoint keys (a model trained with ``CADET.INPUT.MODALITIES ["rgb"]``, same MiT size, classes,
FPN and heads) -> dual model keys:

    backbone.bottom_up.stream.K    -> backbone.bottom_up.rgb_stream.K   copied
                                   -> backbone.bottom_up.aux_stream.K   copied, except
    backbone.bottom_up.stream.patch_embed.proj.weight (C_out, 3, 7, 7)
                                   -> aux_stream's (C_out, C_aux, 7, 7)  adapted: every channel
                                      gets the mean of the 3 RGB filters x 3 / C_aux (the rule of
                                      ImageNet loading, ``backbone/pretrained.py``: a grey input
                                      on all C_aux channels gives the RGB filters' response)
    backbone.fpn_*, proposal_generator.*, roi_heads.*  -> the same key   copied
    backbone.bottom_up.fusions.*   (not in the checkpoint)                new: the module's own
                                      initialisation, then ``start_as_rgb()`` where the module has
                                      one (``concat``: fused = R exactly, so the dual model starts
                                      as the RGB detector); the other modules do not start as it

Every key is reported (returned and logged): copied, adapted, new, and checkpoint keys not used.
A missing or wrongly shaped tensor outside the fusion modules stops with the file and the key.
"""
from __future__ import annotations

import logging

from torch import nn

from ..utils.io import require_weights_file
from .backbone.dual import DualStreamMiT
from .backbone.pretrained import FIRST_CONV, adapt_first_conv, read_weights_file

logger = logging.getLogger(__name__)

SINGLE = "backbone.bottom_up.stream."
RGB, AUX, FUSIONS = "backbone.bottom_up.rgb_stream.", "backbone.bottom_up.aux_stream.", "backbone.bottom_up.fusions."


class RGBInitError(ValueError):
    """A checkpoint that cannot initialise this dual-stream model."""


def _targets(key: str) -> list[tuple[str, bool]]:
    """Checkpoint key -> [(model key, adapt the first patch embedding)]."""
    if key.startswith(SINGLE):
        rest = key[len(SINGLE):]
        return [(RGB + rest, False), (AUX + rest, rest == FIRST_CONV)]
    return [(key, False)]


def init_from_rgb_detector(model: nn.Module, path: str) -> dict[str, dict[str, str] | list[str]]:
    """Load the RGB detector at ``path`` into the dual-stream ``model`` (in place).

    Returns ``{"copied": {model key: checkpoint key}, "adapted": {model key: checkpoint key},
    "new": [model keys not from the checkpoint], "unused": [checkpoint keys]}``, also logged.
    """
    if not isinstance(getattr(model.backbone, "bottom_up", None), DualStreamMiT):
        raise RGBInitError("CADET.INIT.RGB_DETECTOR needs a dual-stream model (MODEL.BACKBONE.NAME "
                           "build_dual_mit_fpn_backbone with RGB and auxiliary modalities)")
    require_weights_file("CADET.INIT.RGB_DETECTOR", path)
    state = read_weights_file(path)
    if not any(k.startswith(SINGLE) for k in state):
        raise RGBInitError(f"{path}: not a single-stream detector of this project (no {SINGLE}* keys; "
                           f"first keys: {list(state)[:3]}); train one with CADET.INPUT.MODALITIES ['rgb']")
    target = model.state_dict()
    new_state, copied, adapted, unused = {}, {}, {}, []
    for key, value in state.items():
        dests = [(d, a) for d, a in _targets(key) if d in target]
        if not dests:
            unused.append(key)
        for dest, adapt in dests:
            if adapt:
                value_here = adapt_first_conv(value, target[dest].shape[1])
            else:
                value_here = value
            if tuple(value_here.shape) != tuple(target[dest].shape):
                raise RGBInitError(f"{path}: {key!r} has shape {tuple(value.shape)} but {dest!r} is "
                                   f"{tuple(target[dest].shape)}: another MiT size, number of classes "
                                   f"or head? (CADET.BACKBONE.SIZE, MODEL.ROI_HEADS.NUM_CLASSES)")
            new_state[dest] = value_here
            (adapted if adapt else copied)[dest] = key
    new = [k for k in target if k not in new_state]
    missing = [k for k in new if not k.startswith(FUSIONS)]
    if missing:
        raise RGBInitError(f"{path}: {len(missing)} tensors of the model outside the fusion modules are not in "
                           f"the file (first: {missing[:3]}); is it a detector of this project?")
    model.load_state_dict(new_state, strict=False)
    started = [i + 1 for i, f in enumerate(model.backbone.bottom_up.fusions) if _start_as_rgb(f)]
    report = {"copied": copied, "adapted": adapted, "new": new, "unused": sorted(unused)}
    _log(path, report, started)
    return report


def _start_as_rgb(fusion: nn.Module) -> bool:
    start = getattr(fusion, "start_as_rgb", None)
    if start is None:
        return False
    start()
    return True


def _log(path: str, report: dict, started: list[int]) -> None:
    logger.info(f"[cadet] initialised from the RGB detector {path}: {len(report['copied'])} tensors copied, "
                f"{len(report['adapted'])} adapted, {len(report['new'])} new, {len(report['unused'])} unused")
    logger.info(f"[cadet] copied: {sorted(report['copied'])}")
    logger.info(f"[cadet] adapted (RGB filter mean x 3 / C_aux): {sorted(report['adapted'])}")
    logger.info(f"[cadet] new (the fusion modules' own initialisation): {report['new']}")
    logger.info(f"[cadet] fusion stages started as the RGB detector (fused = RGB map): {started or 'none'}")
    if report["unused"]:
        logger.warning(f"[cadet] keys of {path} not used: {report['unused']}")


def kept_in_place(report: dict) -> list[str]:
    """Model keys of ``report`` copied into their own place (RGB stream, FPN, RPN, RoI heads):
    the copied keys outside the auxiliary stream."""
    return sorted(k for k in report["copied"] if not k.startswith(AUX))
