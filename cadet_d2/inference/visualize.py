"""Pictures of detections: an image's modalities side by side, boxes on every panel.

A picture is a grid of panels of the image's own aspect ratio: first row RGB, thermal (heat
colour map), event (grey), as far as the model uses them; then, optionally, heat maps of the
fusion modules (:func:`fusion_panels`). Predictions are drawn in cyan with "class score"
labels, ground truth in green with the class name only. RGB is shown as stored (0-255);
thermal, event and single-channel panels are stretched to their own min-max.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..utils.io import atomic_write_bytes

PRED_COLOR = "#00e5ff"
GT_COLOR = "#39ff14"
MODALITY_CMAPS = {"thermal": "inferno", "event": "gray"}
TITLE_PX = 40  # title strip above each panel (two lines)
MIN_PANEL_PX = 320  # small images are scaled up to this panel width


@dataclass
class Panel:
    """One picture panel: ``array`` (H, W, 3) in [0, 1] or (H, W) drawn with ``cmap`` over
    [vmin, vmax]."""

    title: str
    array: np.ndarray
    cmap: Optional[str] = None
    vmin: float = 0.0
    vmax: float = 1.0


def _stretch(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return (x - x.min()) / max(float(x.max() - x.min()), 1e-6)


def modality_panels(image: np.ndarray, slices: Mapping[str, slice]) -> list[Panel]:
    """Panels of an (H, W, C) image whose channels sit at ``slices`` (``modality_slices(cfg)``).

    A 3-channel RGB is shown as stored (values 0-255); any other modality is the mean of its
    channels, min-max stretched, with the colour map of ``MODALITY_CMAPS`` (viridis otherwise).
    """
    panels = []
    for name, s in slices.items():
        x = np.asarray(image[:, :, s], dtype=np.float32)
        if name == "rgb" and x.shape[2] == 3:
            panels.append(Panel("RGB", np.clip(x / 255.0, 0, 1)))
        else:
            panels.append(Panel(name, _stretch(x.mean(axis=2)), MODALITY_CMAPS.get(name, "viridis")))
    return panels


def fusion_panels(model: torch.nn.Module, image: torch.Tensor, size: tuple[int, int]) -> list[Panel]:
    """Heat maps of the fusion modules of a dual-stream ``model`` on ``image`` (C, h, w, as the
    model takes it), resized to ``size`` (H, W): CSSA's spatial attention (with the fraction of
    channels switched R<-X and X<-R at that stage in the title), GAFF's guidance maps. A model
    without such modules gives none."""
    import cv2

    from .fusion_maps import fusion_maps, switch_rates

    maps = fusion_maps(model, image)
    rates = switch_rates(model)
    panels = []
    for key, m in maps.items():
        stage_key, what = key.split("/", 1)
        stage = int(stage_key[len("stage"):])
        title = f"stage {stage} {what.replace('_', ' ')}"
        if what.endswith("attention") and stage in rates:
            r_x, x_r = rates[stage]
            title += f"\nswitched R<-X {r_x:.0%}, X<-R {x_r:.0%}"
        resized = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        panels.append(Panel(title, np.clip(resized, 0, 1), "viridis"))
    return panels


def box_labels(classes: Sequence[int], scores: Optional[Sequence[float]] = None,
               class_names: Sequence[str] = ()) -> list[str]:
    """"name score" per box (``scores`` given), else "name"; the class index where unnamed."""
    def name(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else str(c)

    if scores is None:
        return [name(int(c)) for c in classes]
    return [f"{name(int(c))} {float(s):.2f}" for c, s in zip(classes, scores)]


def render_panels(panels: Sequence[Panel], boxes: np.ndarray, labels: Sequence[str], color: str,
                  first_row: Optional[int] = None) -> bytes:
    """PNG bytes of ``panels`` with ``boxes`` (N, 4) XYXY in panel pixels drawn on each.

    The first ``first_row`` panels (default: all) make the first row; the rest follow in rows
    of as many columns (at least 4 when there are that many). Every panel is as large as the
    first one: width max(W, 320) px, height in proportion, plus a 40 px title strip.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    first_row = len(panels) if first_row is None else first_row
    rest = len(panels) - first_row
    cols = max(first_row, min(rest, 4), 1)
    rows = (1 if first_row else 0) + -(-rest // cols)
    h, w = panels[0].array.shape[:2]
    scale = max(1.0, MIN_PANEL_PX / w)
    pw, ph = round(w * scale), round(h * scale)
    dpi = 100
    fig = Figure(figsize=(cols * pw / dpi, rows * (ph + TITLE_PX) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    fw, fh = cols * pw, rows * (ph + TITLE_PX)
    positions = [(0, k) for k in range(first_row)]
    positions += [(bool(first_row) + k // cols, k % cols) for k in range(rest)]
    for p, (r, c) in zip(panels, positions):
        ax = fig.add_axes([c * pw / fw, 1 - (r * (ph + TITLE_PX) + TITLE_PX + ph) / fh, pw / fw, ph / fh])
        ax.imshow(p.array, cmap=p.cmap, vmin=p.vmin, vmax=p.vmax, interpolation="nearest",
                  extent=(0, w, h, 0))
        for (x0, y0, x1, y1), label in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.2))
            ax.text(x0, y0, label, fontsize=6, color="black", va="bottom", ha="left", clip_on=True,
                    bbox={"facecolor": color, "alpha": 0.75, "pad": 0.5, "edgecolor": "none"})
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(p.title, fontsize=9)
        ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_detections(path: str, image: np.ndarray, slices: Mapping[str, slice], boxes: np.ndarray,
                    classes: Sequence[int], scores: Optional[Sequence[float]] = None,
                    class_names: Sequence[str] = (), extra_panels: Sequence[Panel] = ()) -> None:
    """Write (atomically) a PNG of ``image`` (H, W, C) in model channel order, one panel per
    modality of ``slices`` then ``extra_panels`` (H, W each), with ``boxes`` (N, 4) XYXY
    pixels drawn on every panel: predictions ("class score") when ``scores`` is given, else
    ground truth ("class", another colour)."""
    panels = modality_panels(image, slices)
    png = render_panels(panels + list(extra_panels), boxes, box_labels(classes, scores, class_names),
                        GT_COLOR if scores is None else PRED_COLOR, first_row=len(panels))
    atomic_write_bytes(path, png)
