"""Which model an export folder holds: a fingerprint of the weights and of the config that shapes
the graph, so that a second export into a folder can tell whether its other files are of the same
model."""
from __future__ import annotations

import hashlib
import json

import torch

# Config keys that do not change the traced graph.
IGNORED = ("MODEL.DEVICE", "MODEL.WEIGHTS")


def model_fingerprint(model: torch.nn.Module, meta: dict, cfg) -> str:
    """sha256 (hex, 16 digits) of every tensor of ``model.state_dict()`` (name, shape, dtype,
    values), of ``cfg.MODEL`` (less :data:`IGNORED`) and of the contract ``meta`` ("input" less
    the tracing size, "classes", thresholds): equal for two exports of the same model."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    model_cfg = cfg.MODEL.clone()
    model_cfg.defrost()
    for key in IGNORED:
        model_cfg.pop(key.split(".", 1)[1], None)
    contract = {k: meta[k] for k in ("classes", "score_thresh", "nms_thresh", "max_detections")}
    contract["input"] = {k: v for k, v in meta["input"].items() if k != "export_hw"}
    h.update(model_cfg.dump().encode())
    h.update(json.dumps(contract, sort_keys=True).encode())
    return h.hexdigest()[:16]
