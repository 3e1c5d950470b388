"""PNG plots of the study report (matplotlib's object API on the Agg canvas; no pyplot state).

Each plot takes the report's ``Reporter`` (:mod:`cadet_d2.study.report`; used through its
``sets``, ``main`` and ``results``) and the plan; this module does not import the report.
"""
from __future__ import annotations

import os
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..evaluation.curves import CURVES_FOLDER, draw_curves, main_setting, read_curves
from .plan import Plan
from .stats import mean_std as _mean_std

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _save(fig: Figure, path: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ap_vs_fusion_params(rep, plan: Plan, path: str) -> bool:
    """Test AP (mean ± std over seeds) against fusion-module parameters, one colour per group."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    groups = list(dict.fromkeys(a.group for a in plan.arms))
    main = rep.sets[rep.main]
    drawn = False
    for gi, g in enumerate(groups):
        xs, ys, es, names = [], [], [], []
        for a in plan.arms:
            r = rep.results[a.name]
            m, s = _mean_std(r.values(main, "AP"))
            if a.group != g or m is None or not r.params:
                continue
            xs.append(r.params["fusion_params"] / 1e6)
            ys.append(m)
            es.append(s or 0.0)
            names.append(a.label or a.name)
        if xs:
            drawn = True
            ax.errorbar(xs, ys, yerr=es, fmt="o", color=COLORS[gi % len(COLORS)], label=g, capsize=3)
            for x, y, n in zip(xs, ys, names):
                ax.annotate(n, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("fusion parameters (M)")
    ax.set_ylabel(f"{rep.main} AP (%)")
    ax.set_title("AP vs fusion parameters (mean ± std over seeds)")
    if drawn:
        ax.legend(fontsize=8)
    _save(fig, path)
    return drawn


def ap_per_stage_set(rep, plan: Plan, path: str) -> bool:
    """Phase 1 of each fusion study: test AP per stage set, the baseline as a dashed line."""
    groups = [g for g in dict.fromkeys(a.group for a in plan.arms if a.phase == "1")]
    if not groups:
        return False
    main = rep.sets[rep.main]
    fig = Figure(figsize=(4.5 * len(groups), 4))
    for gi, g in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), gi + 1)
        arms = [a for a in plan.arms if a.group == g and a.phase == "1"]
        labels, ms, ss = [], [], []
        for a in arms:
            m, s = _mean_std(rep.results[a.name].values(main, "AP"))
            labels.append(a.label)
            ms.append(m if m is not None else 0.0)
            ss.append(s or 0.0)
        ax.bar(range(len(arms)), ms, yerr=ss, color=COLORS[gi % len(COLORS)], capsize=3)
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(labels, rotation=45, fontsize=7)
        base = rep.results.get(arms[0].baseline)
        bm = _mean_std(base.values(main, "AP"))[0] if base else None
        if bm is not None:
            ax.axhline(bm, color="k", linestyle="--", linewidth=1, label=f"baseline {arms[0].baseline}")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.95, "BASELINE MISSING", transform=ax.transAxes, ha="center", color="red", fontsize=10)
        ax.set_title(f"{g} phase 1")
        ax.set_ylabel(f"{rep.main} AP (%)")
    _save(fig, path)
    return True


def day_vs_night(rep, plan: Plan, path: str) -> bool:
    """Day AP against night AP per arm (needs sets labelled day and night)."""
    if "day" not in rep.sets or "night" not in rep.sets:
        return False
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    groups = list(dict.fromkeys(a.group for a in plan.arms))
    lo, hi, drawn = None, None, False
    for gi, g in enumerate(groups):
        pts = []
        for a in plan.arms:
            if a.group != g:
                continue
            r = rep.results[a.name]
            d, n = _mean_std(r.values(rep.sets["day"], "AP"))[0], _mean_std(r.values(rep.sets["night"], "AP"))[0]
            if d is not None and n is not None:
                pts.append((d, n, a.label or a.name))
        if pts:
            drawn = True
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=COLORS[gi % len(COLORS)], label=g, s=18)
            for d, n, name in pts:
                ax.annotate(name, (d, n), fontsize=6, xytext=(3, 3), textcoords="offset points")
            vals = [p[0] for p in pts] + [p[1] for p in pts]
            lo = min(vals + ([lo] if lo is not None else []))
            hi = max(vals + ([hi] if hi is not None else []))
    if drawn:
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle=":", linewidth=1)
        ax.legend(fontsize=8)
    ax.set_xlabel("day AP (%)")
    ax.set_ylabel("night AP (%)")
    ax.set_title("day vs night AP per arm (mean over seeds)")
    _save(fig, path)
    return drawn


def miss_rate_curves(rep, plan: Plan, out_dir: str) -> list[str]:
    """Per test set, ``miss_rate_<label>.png``: each arm's miss rate against FPPI (the main setting
    of the curves its first finished seed stored in ``<run>/miss_rate/<set>.json``), its MR^-2 in
    the legend; sets no run has curves of are left out. Returns the file names written."""
    names = []
    for label, dataset in rep.sets.items():
        series = []
        for a in plan.arms:
            res = rep.results[a.name]
            for seed, run_dir, _ in res.done:
                path = os.path.join(run_dir, CURVES_FOLDER, f"{dataset}.json")
                if os.path.isfile(path):
                    settings = read_curves(path)
                    main = main_setting(settings)
                    if main is not None:
                        series.append((f"{a.label or a.name} (seed {seed}) {main}", settings[main]))
                    break
        if series:
            name = f"miss_rate_{label}.png"
            draw_curves(series, os.path.join(out_dir, name), f"{dataset}: miss rate against FPPI per arm")
            names.append(name)
    return names


def write_plots(rep, plan: Plan, out_dir: str) -> list[str]:
    """Write the plots; return the file names written."""
    for name in os.listdir(out_dir):
        if name.startswith("miss_rate_") and name.endswith(".png"):
            os.remove(os.path.join(out_dir, name))
    names = []
    for name, fn in (("ap_vs_fusion_params.png", ap_vs_fusion_params), ("ap_per_stage_set.png", ap_per_stage_set),
                     ("day_vs_night.png", day_vs_night)):
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)
        fn(rep, plan, path)
        if os.path.exists(path):
            names.append(name)
    return names + miss_rate_curves(rep, plan, out_dir)
