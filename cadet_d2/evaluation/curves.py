"""Miss rate against FPPI curves (log-log, the figure KAIST papers show): stored as JSON beside
the metrics and drawn as PNG with matplotlib's object API on the Agg canvas (no pyplot state).

``<dir>/<dataset>.json``: ``{"dataset", "settings": {name: {"MR-2": %, "recall": %, "images",
"positives", "fppi": [...], "miss_rate": [...]}}}``, each curve sampled at :data:`SAMPLE_FPPI`
(the last point of the full curve at or below each, up to the curve's end), and
``<dir>/<dataset>.png``: the curve of :func:`main_setting`.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..utils.io import atomic_write_json

CURVES_FOLDER = "miss_rate"  # OUTPUT_DIR/<this>/<dataset>.json, .png: a run's curves beside its metrics file
#: Where a stored curve is sampled: 161 points evenly spaced in log space over [1e-4, 1e2].
SAMPLE_FPPI = np.logspace(-4.0, 2.0, 161)
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def sample_curve(fppi: np.ndarray, miss: np.ndarray) -> tuple[list[float], list[float]]:
    """The curve (fppi, miss: (N,) by descending score) at the points of :data:`SAMPLE_FPPI` up to
    its last FPPI, and at that last point: the miss rate of the last point at or below each
    (1.0 before the first)."""
    if len(fppi) == 0:
        return [], []
    xs = np.concatenate([SAMPLE_FPPI[SAMPLE_FPPI < fppi[-1]], [max(fppi[-1], SAMPLE_FPPI[0])]])
    idx = np.searchsorted(fppi, xs, side="right") - 1
    ys = np.where(idx >= 0, miss[np.maximum(idx, 0)], 1.0)
    return [float(x) for x in xs], [float(y) for y in ys]


def curve_entry(res) -> dict:
    """The stored form of a :class:`~cadet_d2.evaluation.miss_rate.SettingResult`."""
    xs, ys = sample_curve(res.fppi, res.miss)
    return {"MR-2": None if math.isnan(res.mr) else 100.0 * res.mr, "recall": 100.0 * res.recall,
            "images": res.num_images, "positives": res.num_pos, "fppi": xs, "miss_rate": ys}


def main_setting(settings: dict) -> str | None:
    """The setting drawn: "reasonable" when there, else the first; None when there is none."""
    return "reasonable" if "reasonable" in settings else next(iter(settings), None)


def write_curves(out_dir: str, dataset: str, results: dict) -> str:
    """Write ``<out_dir>/<dataset>.json`` (every setting of ``results``) and ``.png`` (the main
    setting); return the JSON path."""
    os.makedirs(out_dir, exist_ok=True)
    settings = {name: curve_entry(r) for name, r in results.items()}
    path = os.path.join(out_dir, f"{dataset}.json")
    atomic_write_json(path, {"dataset": dataset, "settings": settings})
    main = main_setting(settings)
    if main is not None:
        draw_curves([(main, settings[main])], os.path.join(out_dir, f"{dataset}.png"), f"{dataset}: {main}")
    return path


def read_curves(path: str) -> dict:
    """{setting: entry} of a curves JSON written by :func:`write_curves`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)["settings"]


def draw_curves(series: list[tuple[str, dict]], path: str, title: str) -> bool:
    """One figure: each (label, stored entry) as a step curve of miss rate against FPPI (log-log,
    FPPI 1e-3..1e1 shown, the MR^-2 band 1e-2..1e0 shaded), its MR^-2 in the legend. Returns whether
    any curve was drawn (the figure is written either way)."""
    fig = Figure(figsize=(6, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for i, (label, entry) in enumerate(series):
        if not entry.get("fppi"):
            continue
        mr = entry.get("MR-2")
        text = f"{label}: MR$^{{-2}}$ {'nan' if mr is None else f'{mr:.2f}'}%"
        ax.step(entry["fppi"], np.maximum(entry["miss_rate"], 1e-4), where="post", color=COLORS[i % len(COLORS)],
                label=text, linewidth=1.4)
        drawn = True
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-3, 1e1)
    ax.set_ylim(1e-2, 1.0)
    ax.axvspan(1e-2, 1.0, color="grey", alpha=0.08, linewidth=0)
    ax.set_yticks([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    ax.set_yticklabels(["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"])
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("miss rate")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    if drawn:
        ax.legend(fontsize=7, loc="lower left")
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return drawn
