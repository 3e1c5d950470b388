"""Shared facts and channel maths, imported by config, data and modeling (imports nothing of
cadet_d2 or Detectron2): the MiT size table, the modalities' file channels, and where each
modality sits in the model's input.
"""
from __future__ import annotations

# SegFormer's Mix Transformer encoders: channels and blocks per stage (timm's pvt_v2 with MLP
# ratio 4 has this structure and these counts; b0 3.32M, b1 13.15M, b2 24.2M, b4 60.8M,
# b5 81.4M parameters for 3 input channels).
MIT_SPECS = {
    "b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}
MIT_SIZES = tuple(MIT_SPECS)
MIT_HEADS = (1, 2, 5, 8)
MIT_SR_RATIOS = (8, 4, 2, 1)
MIT_ATTENTION_KINDS = ("fused", "math")  # MiT attention kernels (MiT.set_attention)
MIT_STRIDES = (4, 8, 16, 32)

# The modalities a data file can hold and the file channels each takes by default.
MODALITY_CHANNELS = {"rgb": [0, 1, 2], "thermal": [3], "event": [4]}

# Channels of each modality read from a paired image file (rgb: colour, thermal/event: grey);
# with paired files the model input holds these, in CADET.INPUT.MODALITIES order.
PAIR_CHANNELS = {"rgb": 3, "thermal": 1, "event": 1}
# Image files a set of paired files (pairs.csv or CADET.DATA.FOLDERS) may name.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

# CADET.DATA.UNLABELED and CADET.DATA.ON_ERROR values.
UNLABELED_POLICIES = ("skip", "negative")
ON_ERROR_POLICIES = ("raise", "skip")
# CADET.INPUT.SIZE_MISMATCH values: a paired image whose size differs from the RGB image is
# resized to the RGB size, or stops the run naming the file.
SIZE_MISMATCH_POLICIES = ("resize", "error")
# Sensor-failure modes: modality dropout in training, test conditions (cadet_d2/data/corrupt.py).
TRAIN_MODES = ("zero", "noise")
TEST_MODES = ("zero", "noise", "frozen")
# CADET.LATE.MERGE values: how late fusion merges its branches' detections (modeling/merge.py).
LATE_MERGE_RULES = ("nms", "proben")
# Occlusion level of a box (annotation "occlusion", KAIST's labels): 0 none, 1 partial, 2 heavy.
OCCLUSION_LEVELS = (0, 1, 2)
# Miss-rate settings (CADET.TEST.MISS_RATE.SETTINGS; defined in cadet_d2/evaluation/miss_rate_gt.py):
# the KAIST devkit's nine, then "all" (every box of the class, no limit; not a devkit setting).
MISS_RATE_SETTINGS = ("reasonable", "reasonable-day", "reasonable-night", "near", "medium", "far",
                      "occ-none", "occ-partial", "occ-heavy", "all")
# Signals on which a run checkpoints and stops (CADET.CHECKPOINT.STOP_SIGNALS' default).
DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


def modality_slices(cfg) -> dict[str, slice]:
    """Where each modality of ``CADET.INPUT.MODALITIES`` sits in the model's input channels.

    E.g. ["rgb", "thermal", "event"] -> {"rgb": 0:3, "thermal": 3:4, "event": 4:5}.
    """
    out, start = {}, 0
    for name in cfg.CADET.INPUT.MODALITIES:
        n = len(cfg.CADET.INPUT.LAYOUT[name])
        out[name] = slice(start, start + n)
        start += n
    return out


def file_channel_indices(cfg) -> list[int]:
    """File channels read for the model input, in model order."""
    return [c for name in cfg.CADET.INPUT.MODALITIES for c in cfg.CADET.INPUT.LAYOUT[name]]


def group_modalities(group: str) -> list[str]:
    """``"thermal+event"`` -> ``["thermal", "event"]`` (a modality group as config keys write it)."""
    return [g.strip() for g in str(group).split("+")]


def group_channels(group: str, slices: dict[str, slice], key: str) -> list[int]:
    """``"thermal+event"`` -> the model-input channels of those modalities (``key`` names the
    config key in errors)."""
    names = group_modalities(group)
    unknown = [n for n in names if n not in slices]
    if not group or unknown:
        raise ValueError(f"{key}: {group!r} names {unknown or 'no'} modality; the model's modalities are "
                         f"{list(slices)} (join several with '+', e.g. 'thermal+event')")
    return [c for n in names for c in range(slices[n].start, slices[n].stop)]

# CADET.INPUT.GREY_TOLERANCE's default (grey levels a 3-channel thermal/event file's channels may
# differ by and still be read as grey): KAIST's PNG lwir files differ by up to 2.
DEFAULT_GREY_TOLERANCE = 3
