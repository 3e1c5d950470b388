"""Fusion maps of a dual-stream CadetRCNN: where CSSA attends, where GAFF's guidance opens.

``fusion_maps(model, image)`` runs the model's backbone on one image and collects, per stage
s = 1..4, the maps the fusion modules keep after their forward pass:

* ``stage{s}/cssa_attention``: CSSA's spatial attention ``a`` (weight of the RGB stream;
  1 - a goes to the auxiliary stream), from ``last_attention`` (B, 1, h, w);
* ``stage{s}/gaff_guidance_rgb`` / ``gaff_guidance_aux``: GAFF's guidance maps g_R / g_X
  averaged over channels, from ``last_guidance_rgb`` / ``last_guidance_aux`` (B, C, h, w).

The key prefix is the module's registered name, so a module of your own that keeps the same
attributes shows up under its own name. Every map is a sigmoid output, bilinearly resized to
the padded input and cropped to the image's (H, W), so values stay in [0, 1].
``save_fusion_maps`` draws them next to the RGB and thermal channels into a PNG.
"""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.fusion import FUSION_REGISTRY
from ..utils.io import atomic_write_bytes

# attribute kept by a fusion module -> key suffix (after the module's registered name)
MAP_ATTRIBUTES = {
    "last_attention": "attention",
    "last_guidance_rgb": "guidance_rgb",
    "last_guidance_aux": "guidance_aux",
}


def bottom_up(model: nn.Module) -> nn.Module:
    """The MiT part of ``model.backbone`` (below the FPN when there is one)."""
    return getattr(model.backbone, "bottom_up", model.backbone)


def _registered_name(module: nn.Module) -> str:
    names = [name for name, cls in FUSION_REGISTRY if cls is type(module)]
    return names[0] if names else type(module).__name__.lower()


def _clear_maps(fusions: list[nn.Module]) -> None:
    """Forget maps (and switch rates) of an earlier forward pass, so only this image's are collected."""
    for f in fusions:
        for attr in (*MAP_ATTRIBUTES, "last_switch_rates"):
            if hasattr(f, attr):
                setattr(f, attr, None)


def _to_image_size(m: torch.Tensor, padded: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(h, w) map over the padded input -> (H, W) float32 array in [0, 1] over the image."""
    up = F.interpolate(m[None, None].float(), size=padded, mode="bilinear", align_corners=False)
    return up[0, 0, : size[0], : size[1]].clamp(0, 1).cpu().numpy().astype(np.float32)


def _run_backbone(model: nn.Module, image: torch.Tensor) -> tuple[int, int]:
    """Preprocess one (C, H, W) image as the model does (normalise, pad) and run its backbone,
    in eval mode without gradients; returns the padded (H_pad, W_pad)."""
    h, w = image.shape[-2:]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            images = model.preprocess_image([{"image": image, "height": h, "width": w}])
            model.backbone(images.tensor)
    finally:
        model.train(was_training)
    return tuple(images.tensor.shape[-2:])


def fusion_maps(model: nn.Module, image: torch.Tensor) -> dict[str, np.ndarray]:
    """Fusion maps of one image, keyed ``stage{s}/<module>_<map>``, each (H, W) float32 in [0, 1].

    ``model``: a CadetRCNN (any GeneralizedRCNN whose backbone's bottom-up part has ``fusions``);
    ``image``: (C, H, W) as the model takes it (values 0-255, not normalised). Only the
    preprocessing and the backbone run (the detection heads do not change the maps).
    Fusion modules that keep no maps (``sum``, ``concat``, ``frm_ffm``) are skipped; a model
    without fusions gives an empty dict.
    """
    fusions = list(getattr(bottom_up(model), "fusions", []))
    _clear_maps(fusions)
    padded = _run_backbone(model, image)
    size = tuple(image.shape[-2:])
    maps = {}
    for i, f in enumerate(fusions):
        for attr, suffix in MAP_ATTRIBUTES.items():
            value: Optional[torch.Tensor] = getattr(f, attr, None)
            if value is None:
                continue
            m = value[0].mean(dim=0)  # (C, h, w) or (1, h, w) -> (h, w)
            maps[f"stage{i + 1}/{_registered_name(f)}_{suffix}"] = _to_image_size(m, padded, size)
    return maps


def switch_rates(model: nn.Module) -> dict[int, tuple[float, float]]:
    """Stage (1-4) -> (rgb_from_aux, aux_from_rgb): the fraction of channels CSSA switched in the
    last forward pass (e.g. the one of :func:`fusion_maps`), from each fusion module's
    ``last_switch_rates``; stages whose module keeps none are left out."""
    rates = {}
    for i, f in enumerate(getattr(bottom_up(model), "fusions", [])):
        value = getattr(f, "last_switch_rates", None)
        if value is not None:
            rates[i + 1] = (float(value[0]), float(value[1]))
    return rates


def _display(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) channels -> (H, W, C) or (H, W) float array in [0, 1] (min-max per image)."""
    x = x.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-6)
    x = x.permute(1, 2, 0).numpy()
    return x[:, :, 0] if x.shape[2] == 1 else x


def _input_panels(model: nn.Module, image: torch.Tensor,
                  thermal_channel: Optional[int]) -> list[tuple[str, np.ndarray, Optional[str]]]:
    """(title, array, colormap) of the RGB and thermal channels of ``image`` (C, H, W)."""
    net = bottom_up(model)
    rgb_index = getattr(net, "rgb_index", None)
    aux_index = getattr(net, "aux_index", None)
    panels = []
    if rgb_index is not None and len(rgb_index) == 3:
        panels.append(("RGB", _display(image[rgb_index.cpu()]), None))
    elif rgb_index is None and image.shape[0] >= 3:
        panels.append(("channels 0-2", _display(image[:3]), None))
    if thermal_channel is None and aux_index is not None and len(aux_index):
        thermal_channel = int(aux_index[0])
    if thermal_channel is not None:
        panels.append((f"thermal (channel {thermal_channel})", _display(image[thermal_channel:thermal_channel + 1]), "inferno"))
    return panels


def save_fusion_maps(model: nn.Module, image: torch.Tensor, path: str,
                     thermal_channel: Optional[int] = None) -> dict[str, np.ndarray]:
    """Write a PNG of the RGB channels, the thermal channel and one heat map per fusion map.

    ``image``: (C, H, W), values 0-255. RGB: the channels ``model.backbone.bottom_up.rgb_index``;
    thermal: ``thermal_channel``, by default the first auxiliary channel (thermal in the default
    modality order rgb, thermal, event). Each heat map has its own colour bar (values in [0, 1]).
    Returns the maps of :func:`fusion_maps`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = fusion_maps(model, image)
    panels = _input_panels(model, image, thermal_channel)
    panels += [(name, m, "viridis") for name, m in maps.items()]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    h, w = image.shape[-2:]
    fig = Figure(figsize=(4 * cols, 4 * rows * h / w + 0.6 * rows))
    FigureCanvasAgg(fig)
    for k, (title, array, cmap) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        shown = ax.imshow(array, cmap=cmap, interpolation="nearest")
        if title in maps:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    return maps
