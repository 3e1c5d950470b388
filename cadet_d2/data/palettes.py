"""Colour palettes of thermal renderings, and telling what a colour thermal/event file most likely is.

A palette is a table of 256 colours, entry ``k`` the colour of scalar ``k`` (0 = coldest):
OpenCV's colormaps (``opencv.<name>``, tabulated by ``cv2.applyColorMap`` on a 0..255 ramp) and
matplotlib's (``matplotlib.<name>``, tabulated by ``matplotlib.colormaps[name]`` at 256 points).
Cyclic palettes (hsv, twilight) are left out: their ends share a colour, so a colour has no
single scalar. FLIR's "iron" is not tabulated (no published table).

:func:`to_scalar` maps each pixel to the entry of the nearest colour (Euclidean in RGB), through
a 64 x 64 x 64 look-up table built once per palette and process (the nearest entry to each cell's
centre: each channel quantised to 4 levels), and reports the mean distance between the pixels
and their entries' colours (the residual, on a subsample): a few levels for the right palette (JPEG artefacts),
tens for a wrong one.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

OPENCV = ("autumn", "bone", "cividis", "cool", "deepgreen", "hot", "inferno", "jet", "magma", "ocean", "parula",
          "pink", "plasma", "rainbow", "spring", "summer", "turbo", "viridis", "winter")
MATPLOTLIB = ("afmhot", "cividis", "cubehelix", "gist_heat", "gist_rainbow", "gnuplot", "gnuplot2", "hot", "inferno",
              "jet", "magma", "nipy_spectral", "plasma", "rainbow", "turbo", "viridis")
NAMES = tuple(f"opencv.{n}" for n in OPENCV) + tuple(f"matplotlib.{n}" for n in MATPLOTLIB)
LUT_BITS = 6  # look-up table cells per channel: 2**LUT_BITS
MAX_RESIDUAL = 8.0  # mean residual (RGB levels) above which a palette does not fit a file
SAMPLE_PIXELS = 4096  # pixels of a file compared with every palette to name the closest


@functools.lru_cache(maxsize=None)
def table(name: str) -> np.ndarray:
    """(256, 3) int32 RGB colours of palette ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"unknown thermal palette {name!r}; known: {', '.join(NAMES)}")
    source, cmap = name.split(".", 1)
    if source == "opencv":
        ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
        bgr = cv2.applyColorMap(ramp, getattr(cv2, f"COLORMAP_{cmap.upper()}"))[:, 0]
        return bgr[:, ::-1].astype(np.int32)
    import matplotlib

    rgba = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255).astype(np.int32)


def _nearest(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(N,) index of the nearest palette entry of each of (N, 3) colours."""
    c = colours.astype(np.float32)
    p = palette.astype(np.float32)
    out = np.empty(len(c), dtype=np.uint8)
    for i in range(0, len(c), 1 << 15):  # |c - p|^2 = |p|^2 - 2 c.p (+ |c|^2, the same for every entry)
        d = (p * p).sum(1)[None, :] - 2.0 * c[i:i + (1 << 15)] @ p.T
        out[i:i + (1 << 15)] = d.argmin(1)
    return out


@functools.lru_cache(maxsize=None)
def lut(name: str) -> np.ndarray:
    """(2**LUT_BITS,) * 3 uint8: palette index of the nearest entry to each cell's centre, indexed [r, g, b]."""
    n = 1 << LUT_BITS
    step = 256 // n
    centres = np.arange(n) * step + (step - 1) / 2
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
    return _nearest(grid, table(name)).reshape(n, n, n)


def to_scalar(bgr: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 BGR pixels -> ((H, W) uint8 scalars through palette ``name``, mean residual
    over every 4th pixel of every 4th row)."""
    shift = 8 - LUT_BITS
    cell = ((bgr[:, :, 2] >> shift).astype(np.int32) << (2 * LUT_BITS)) | \
        ((bgr[:, :, 1] >> shift).astype(np.int32) << LUT_BITS) | (bgr[:, :, 0] >> shift)
    scalar = lut(name).ravel()[cell]
    colours = table(name)[scalar[::4, ::4]]  # (h, w, 3) RGB
    diff = bgr[::4, ::4, ::-1].astype(np.int32) - colours
    residual = float(np.sqrt((diff * diff).sum(2)).mean())
    return scalar, residual


def _sample(bgr: np.ndarray) -> np.ndarray:
    """Up to SAMPLE_PIXELS evenly spaced pixels of (H, W, 3) BGR, as (N, 3) RGB int32."""
    flat = bgr.reshape(-1, 3)
    pick = np.linspace(0, len(flat) - 1, min(SAMPLE_PIXELS, len(flat))).astype(np.int64)
    return flat[pick, ::-1].astype(np.int32)


def closest(bgr: np.ndarray) -> tuple[str, float]:
    """(name, mean residual) of the palette that fits a sample of (H, W, 3) BGR pixels best."""
    rgb = _sample(bgr)
    best = ("", float("inf"))
    for name in NAMES:
        p = table(name)
        d = rgb - p[_nearest(rgb, p)]
        residual = float(np.sqrt((d * d).sum(1)).mean())
        if residual < best[1]:
            best = (name, residual)
    return best


def event_rendering(bgr: np.ndarray) -> str | None:
    """'white' or 'black' when (H, W, 3) BGR pixels look like a rendering of events (positive red,
    negative blue, on a white or black background: half of the pixels or more that background,
    95% background, red or blue, and both red and blue ones: a palette rendering of a cold scene,
    mostly black or blue, has one of them only), else None."""
    rgb = _sample(bgr)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    white = (rgb.min(1) >= 200) & (rgb.max(1) - rgb.min(1) <= 30)
    black = rgb.max(1) <= 50
    red = r - np.maximum(g, b) >= 60
    blue = b - np.maximum(r, g) >= 60
    background = white if white.sum() >= black.sum() else black
    if background.mean() < 0.5 or (white | black | red | blue).mean() < 0.95 or not (red.any() and blue.any()):
        return None
    return "white" if background is white else "black"


def describe(bgr: np.ndarray) -> str:
    """What a 3-channel (H, W, 3) uint8 BGR thermal/event file whose channels differ most likely is,
    and what to do: for the error that refuses it."""
    background = event_rendering(bgr)
    if background is not None:
        return (f"most likely a colour rendering of events (positive red, negative blue, on {background}); "
                "use the raw event data (grey event frames of counts) instead")
    name, residual = closest(bgr)
    if residual <= MAX_RESIDUAL:
        return (f"most likely a thermal image rendered through a colour palette (closest: {name}, mean residual "
                f"{residual:.1f}); use the camera's raw or grey export, or set CADET.INPUT.THERMAL_PALETTE {name} "
                "to map each colour back to its scalar")
    return (f"no palette fits it (closest: {name}, mean residual {residual:.1f}): a colour photograph? (is it the "
            "RGB image?)")
