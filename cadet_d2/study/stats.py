"""Statistics and number formatting shared by the study report, its plots and the runner's
progress lines (a leaf module: it imports nothing of the study package)."""
from __future__ import annotations

import math
import statistics
from typing import Optional


def mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    """(mean, sample std) of the values that are not NaN; (None, None) without any, std None with one."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def mean_or_none(values) -> Optional[float]:
    """Mean of the values that are not None (None without any)."""
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def fmt_number(v: Optional[float], nd: int = 1, sign: bool = False) -> str:
    """``v`` with ``nd`` decimals (``+`` for positive with ``sign``); ``–`` for None or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def fmt_mean_std(values: list[float], nd: int = 2, sign: bool = False) -> str:
    """``mean ± std`` over the values that are not NaN (``mean`` alone with one; ``–`` with none)."""
    m, s = mean_std(values)
    if m is None:
        return "–"
    mean = f"{m:+.{nd}f}" if sign else f"{m:.{nd}f}"
    return f"{mean} ± {s:.{nd}f}" if s is not None else mean


def fmt_duration(seconds: float) -> str:
    """``4m05s``, ``1h02m03s`` or ``2d03h04m``."""
    seconds = int(round(seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{d}d{h:02d}h{m:02d}m" if d else f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
