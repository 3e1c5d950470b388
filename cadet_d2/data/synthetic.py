"""A deterministic synthetic day/night data set in the real data layout.

Every image is an (H, W, 5) uint8 array: channels 0-2 RGB, 3 thermal, 4 event. By day the
RGB is bright and cluttered and the thermal has low contrast; by night the RGB is dark and
noisy while the objects are clearly warm in the thermal channel (next to unlabeled warm
distractors). The event channel holds thin edges of moving objects and clutter plus salt
noise (ON events 255, OFF events 128, 0 elsewhere).

Layout written by :func:`make_synthetic_dataset` (one data root)::

    ROOT/images/<stem>.npy           (H, W, 5) uint8
    ROOT/labels/<stem>.txt           YOLO "class xc yc w h" (missing = unlabeled, empty = no objects)
    ROOT/classes.txt                 one class name per line
    ROOT/daytest1/{images,labels}    day-only test set, all labeled
    ROOT/nighttest1/{images,labels}  night-only test set, all labeled
    ROOT/manifest.json               parameters, counts and a per-image day/night flag

Image ``i`` of set ``s`` (0 = main root, 1 = daytest1, 2 = nighttest1) is rendered from
``np.random.default_rng([seed, s, i])`` alone, so files do not depend on generation order.
"""
from __future__ import annotations

import json
import math
import os

import cv2
import numpy as np

FORMAT_VERSION = 1
# (folder relative to ROOT, stem prefix, night flag: None = alternate day/night)
SETS = (("", "synth_", None), ("daytest1", "day_", False), ("nighttest1", "night_", True))
SET_NAMES = ("main", "daytest1", "nighttest1")
BASE_CLASSES = ("person", "vehicle", "cyclist")
HEIGHT_RANGE = (280, 320)
WIDTH_RANGE = (370, 410)
NUM_OBJECTS_P = (0.06, 0.22, 0.28, 0.22, 0.14, 0.08)  # P(0 objects), ..., P(5 objects)
EVENT_ON, EVENT_OFF = 255, 128
SKY_COLORS = ((135, 180, 235), (190, 195, 200), (210, 215, 225), (160, 190, 220), (230, 200, 170))
GROUND_COLORS = ((110, 110, 115), (140, 135, 125), (75, 120, 60), (130, 110, 80), (90, 90, 95))
SKIN = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (95, 62, 40))

# Relative heat (0 = ambient, 1 = hottest) of the parts of each base class.
HEAT = {
    "person": {"head": 1.0, "torso": 0.7, "arm": 0.8, "leg": 0.6},
    "vehicle": {"body": 0.35, "window": 0.08, "wheel": 0.75, "engine": 1.0},
    "cyclist": {"head": 1.0, "torso": 0.75, "arm": 0.8, "leg": 0.6, "wheel": 0.15, "frame": 0.1},
}

Spec = tuple  # (kind, params): a drawing primitive, see _draw


# ---- drawing primitives ----------------------------------------------------------------------

def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def _draw(canvas: np.ndarray, spec: Spec, color) -> None:
    """Draw one filled primitive on ``canvas`` (H x W or H x W x C) in place."""
    kind, p = spec
    if kind == "rect":
        cv2.rectangle(canvas, _pt(p[0], p[1]), _pt(p[2], p[3]), color, -1)
    elif kind == "ellipse":
        axes = (max(1, int(round(p[2]))), max(1, int(round(p[3]))))
        cv2.ellipse(canvas, _pt(p[0], p[1]), axes, float(p[4]), 0, 360, color, -1)
    elif kind == "line":
        cv2.line(canvas, _pt(p[0], p[1]), _pt(p[2], p[3]), color, max(1, int(round(p[4]))))
    elif kind == "ring":
        cv2.circle(canvas, _pt(p[0], p[1]), max(1, int(round(p[2]))), color, max(1, int(round(p[3]))))
    elif kind == "poly":
        cv2.fillPoly(canvas, [np.round(np.asarray(p)).astype(np.int32)], color)
    else:
        raise ValueError(f"unknown primitive {kind!r}")


def _draw_all(canvas: np.ndarray, specs: list[Spec], color) -> None:
    for spec in specs:
        _draw(canvas, spec, color)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int], c: int = 1) -> np.ndarray:
    """Low-frequency unit noise, (h, w) or (h, w, c) float32, from a coarse grid upsampled."""
    shape = cells if c == 1 else (*cells, c)
    grid = rng.standard_normal(shape, dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _blob(h: int, w: int, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """(h, w) float32 separable gaussian with peak 1 at (cx, cy)."""
    gx = np.exp(-0.5 * ((np.arange(w, dtype=np.float32) - cx) / sx) ** 2)
    gy = np.exp(-0.5 * ((np.arange(h, dtype=np.float32) - cy) / sy) ** 2)
    return np.outer(gy, gx)


def _shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``mask`` (H x W) translated by (dx, dy) pixels, zero filled."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


# ---- objects -----------------------------------------------------------------------------------

def _person_parts(rng: np.random.Generator, x0: float, y0: float, w: float, h: float) -> list:
    """(role, spec) parts of an upright pedestrian in the nominal box (x0, y0, w, h)."""
    cx = x0 + w / 2
    lean = rng.uniform(-0.04, 0.04) * h
    hr = 0.07 * h
    neck, hip = y0 + 2 * hr, y0 + 0.53 * h
    tw = w * rng.uniform(0.26, 0.34)  # half torso width at the shoulders
    arm_t, leg_t = 0.05 * h, 0.08 * h
    swing = rng.uniform(-0.07, 0.07) * h
    stride = rng.uniform(0.0, 0.16) * h
    foot = y0 + h - leg_t / 2
    parts = [("head", ("ellipse", (cx + lean, y0 + hr, 0.85 * hr, hr, 0)))]
    for s in (-1, 1):
        parts.append(("leg", ("line", (cx + s * 0.05 * h, hip, cx + s * (0.03 * h + stride / 2), foot, leg_t))))
    parts.append(("torso", ("poly", [(cx + lean - tw, neck + 0.02 * h), (cx + lean + tw, neck + 0.02 * h),
                                     (cx + 0.8 * tw, hip + 0.02 * h), (cx - 0.8 * tw, hip + 0.02 * h)])))
    for s in (-1, 1):
        hand_x = cx + s * (tw + 0.04 * h) + s * swing
        parts.append(("arm", ("line", (cx + lean + s * tw, neck + 0.05 * h, hand_x, y0 + 0.5 * h, arm_t))))
    return parts


def _vehicle_parts(rng: np.random.Generator, x0: float, y0: float, w: float, h: float) -> list:
    """(role, spec) parts of a side-view car in the nominal box (x0, y0, w, h)."""
    flip = rng.random() < 0.5
    fx = (lambda u: x0 + (1 - u) * w) if flip else (lambda u: x0 + u * w)
    wr = 0.2 * h
    return [
        ("body", ("poly", [(fx(0.0), y0 + 0.38 * h), (fx(1.0), y0 + 0.38 * h),
                           (fx(1.0), y0 + 0.8 * h), (fx(0.0), y0 + 0.8 * h)])),
        ("body", ("poly", [(fx(0.17), y0 + 0.4 * h), (fx(0.3), y0), (fx(0.7), y0), (fx(0.86), y0 + 0.4 * h)])),
        ("window", ("poly", [(fx(0.24), y0 + 0.36 * h), (fx(0.33), y0 + 0.07 * h),
                             (fx(0.67), y0 + 0.07 * h), (fx(0.79), y0 + 0.36 * h)])),
        ("engine", ("poly", [(fx(0.01), y0 + 0.43 * h), (fx(0.18), y0 + 0.43 * h),
                             (fx(0.18), y0 + 0.72 * h), (fx(0.01), y0 + 0.72 * h)])),
        ("wheel", ("ellipse", (fx(0.2), y0 + h - wr, wr, wr, 0))),
        ("wheel", ("ellipse", (fx(0.8), y0 + h - wr, wr, wr, 0))),
    ]


def _cyclist_parts(rng: np.random.Generator, x0: float, y0: float, w: float, h: float) -> list:
    """(role, spec) parts of a side-view cyclist in the nominal box (x0, y0, w, h)."""
    flip = rng.random() < 0.5
    fx = (lambda u: x0 + (1 - u) * w) if flip else (lambda u: x0 + u * w)
    r, t = 0.22 * h, max(1.0, 0.035 * h)
    hub_y = y0 + h - r - t / 2
    rear, front = fx((r + t) / w), fx(1 - (r + t) / w)
    seat, handle = (fx(0.42), y0 + 0.52 * h), (fx(0.72), y0 + 0.42 * h)
    pedal = (fx(0.5), hub_y + 0.05 * h)
    ft = max(1.0, 0.025 * h)
    return [
        ("wheel", ("ring", (rear, hub_y, r, t))),
        ("wheel", ("ring", (front, hub_y, r, t))),
        ("frame", ("line", (rear, hub_y, *seat, ft))),
        ("frame", ("line", (*seat, *handle, ft))),
        ("frame", ("line", (*handle, front, hub_y, ft))),
        ("frame", ("line", (*pedal, *seat, ft))),
        ("leg", ("line", (*seat, *pedal, 0.08 * h))),
        ("torso", ("line", (fx(0.56), y0 + 0.2 * h, *seat, 0.12 * h))),
        ("arm", ("line", (fx(0.57), y0 + 0.22 * h, *handle, 0.05 * h))),
        ("head", ("ellipse", (fx(0.6), y0 + 0.08 * h, 0.065 * h, 0.075 * h, 0))),
    ]


PART_BUILDERS = {"person": _person_parts, "vehicle": _vehicle_parts, "cyclist": _cyclist_parts}


def class_names(num_classes: int) -> list[str]:
    """Class names for ``num_classes`` classes: person, vehicle, cyclist, then variants."""
    return [BASE_CLASSES[c % 3] + ("" if c < 3 else f"_{c // 3}") for c in range(num_classes)]


def _object_size(rng: np.random.Generator, cls: int) -> tuple[float, float]:
    """Nominal (height, width) in pixels: log-uniform heights, class-specific aspect ratio."""
    base, variant = cls % 3, cls // 3
    lo, hi, aspect = [(15, 170, (0.4, 0.5)), (14, 95, (1.6, 2.6)), (15, 130, (0.85, 1.2))][base]
    h = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return h, h * rng.uniform(*aspect) * (1 + 0.35 * variant)


def _object_colors(rng: np.random.Generator, base: str) -> dict:
    """RGB colour of every part role of one object."""
    rand = lambda lo, hi: tuple(int(v) for v in rng.integers(lo, hi, 3))
    skin = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in SKIN[rng.integers(len(SKIN))])
    top, pants, paint = _random_color(rng), tuple(int(0.6 * v) for v in _random_color(rng)), _random_color(rng)
    return {"head": skin, "torso": top, "arm": top if rng.random() < 0.7 else skin, "leg": pants,
            "body": paint, "engine": paint, "window": rand(20, 80), "wheel": rand(10, 50), "frame": _random_color(rng)}


def _iou(a: tuple, b: tuple) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _visible_fraction(box: tuple, h: int, w: int) -> float:
    return _iou(box, (0, 0, w, h)) * (w * h) / ((box[2] - box[0]) * (box[3] - box[1]))


def _place(rng: np.random.Generator, cls: int, h: int, w: int, horizon: float, taken: list) -> tuple | None:
    """A nominal box (x0, y0, x1, y1) at least half inside the image, IoU <= 0.4 with ``taken``."""
    for _ in range(10):
        oh, ow = _object_size(rng, cls)
        bottom = min(horizon + oh * rng.uniform(0.6, 1.5), h + 0.3 * oh)
        cx = rng.uniform(-0.3 * ow, w + 0.3 * ow)
        box = (cx - ow / 2, bottom - oh, cx + ow / 2, bottom)
        if _visible_fraction(box, h, w) >= 0.5 and all(_iou(box, t) <= 0.4 for t in taken):
            return box
    return None


def _sample_objects(rng: np.random.Generator, h: int, w: int, horizon: float, num_classes: int) -> list[dict]:
    """Objects of one scene, far to near (drawing order): class, parts, colours, heat."""
    n = int(rng.choice(len(NUM_OBJECTS_P), p=NUM_OBJECTS_P))
    objects, taken = [], []
    for _ in range(n):
        cls = int(rng.integers(num_classes))
        box = _place(rng, cls, h, w, horizon, taken)
        if box is None:
            continue
        taken.append(box)
        base = BASE_CLASSES[cls % 3]
        parts = PART_BUILDERS[base](rng, box[0], box[1], box[2] - box[0], box[3] - box[1])
        gain = rng.uniform(0.85, 1.1) * (1 - 0.15 * (cls // 3))
        heat = {r: v * gain * rng.uniform(0.9, 1.1) for r, v in HEAT[base].items()}
        objects.append({"cls": cls, "bottom": box[3], "parts": parts,
                        "colors": _object_colors(rng, base), "heat": heat})
    return sorted(objects, key=lambda o: o["bottom"])


# ---- clutter and distractors -------------------------------------------------------------------

def _sample_clutter(rng: np.random.Generator, h: int, w: int, horizon: float) -> list[dict]:
    """Background clutter: buildings, boxes, bushes, poles, signs; each cool in thermal."""
    items = []
    for _ in range(int(rng.integers(2, 6))):  # buildings standing on the horizon
        bw, bh = rng.uniform(40, 140), rng.uniform(30, horizon + 20)
        x = rng.uniform(-20, w)
        items.append({"specs": [("rect", (x, horizon - bh, x + bw, horizon + rng.uniform(0, 15)))], "size": bw})
    for _ in range(int(rng.integers(25, 55))):
        size = math.exp(rng.uniform(math.log(4), math.log(70)))
        x, y = rng.uniform(0, w), rng.uniform(horizon * 0.5, h)
        kind = rng.integers(5)
        if kind == 0:
            specs = [("rect", (x, y, x + size * rng.uniform(0.3, 2.0), y + size * rng.uniform(0.3, 2.0)))]
        elif kind == 1:
            ax, ay, angle = size * rng.uniform(0.3, 1.0), size * rng.uniform(0.3, 1.0), rng.uniform(0, 180)
            specs = [("ellipse", (x, y, ax, ay, angle))]
        elif kind == 2:
            a = rng.uniform(0, 2 * math.pi)
            specs = [("line", (x, y, x + 2 * size * math.cos(a), y + 2 * size * math.sin(a), rng.uniform(1, 4)))]
        elif kind == 3:  # pole with a round sign: a head-and-body look-alike
            top = y - 3 * size
            specs = [("line", (x, y, x, top, max(1.0, size * 0.15))),
                     ("ellipse", (x, top, size * 0.35, size * 0.35, 0))]
        else:
            pts = np.stack([x + rng.uniform(-1, 1, 4) * size, y + rng.uniform(-1, 1, 4) * size], axis=1)
            specs = [("poly", pts)]
        items.append({"specs": specs, "size": size})
    for item in items:
        item["color"] = _random_color(rng)
        item["heat"] = float(rng.uniform(-0.08, 0.12))
    return items


def _sample_warm(rng: np.random.Generator, h: int, w: int, horizon: float, night: bool) -> list[dict]:
    """Unlabeled warm distractors: lamps, engines, animals, warm poles and windows."""
    items = []
    for _ in range(int(rng.integers(2, 7) if night else rng.integers(3, 9))):
        kind, cool = int(rng.integers(5)), []
        x, y = rng.uniform(0, w), rng.uniform(horizon * 0.7, h)
        s = math.exp(rng.uniform(math.log(6), math.log(50)))
        if kind == 0:  # street lamp: pole + hot round bulb
            top = y - rng.uniform(3, 6) * s
            specs = [("ellipse", (x, top, 0.3 * s, 0.3 * s, 0))]
            cool = [("line", (x, y, x, top, max(1.0, 0.12 * s)))]
            heat, light = rng.uniform(0.8, 1.1), (x, top, 0.3 * s)
        elif kind == 1:  # engine / exhaust: a wide blob
            specs = [("ellipse", (x, y, s * rng.uniform(0.8, 1.6), s * rng.uniform(0.2, 0.45), rng.uniform(-10, 10)))]
            heat, light = rng.uniform(0.6, 1.0), None
        elif kind == 2:  # animal: body, head and legs
            specs = [("ellipse", (x, y, 0.6 * s, 0.25 * s, 0)),
                     ("ellipse", (x + 0.65 * s, y - 0.2 * s, 0.18 * s, 0.15 * s, 0))]
            specs += [("line", (x + dx * s, y, x + dx * s, y + 0.5 * s, max(1.0, 0.08 * s)))
                      for dx in (-0.4, -0.2, 0.2, 0.4)]
            heat, light = rng.uniform(0.6, 0.95), None
        elif kind == 3:  # warm pole / pipe, upright
            specs = [("rect", (x, y - rng.uniform(1.5, 4) * s, x + rng.uniform(0.12, 0.3) * s, y))]
            heat, light = rng.uniform(0.5, 0.85), None
        else:  # heated window / sun-warmed panel
            specs = [("rect", (x, y, x + s * rng.uniform(0.5, 1.5), y + s * rng.uniform(0.4, 1.0)))]
            heat, light = rng.uniform(0.4, 0.8), (x + 0.5 * s, y + 0.4 * s, 0.6 * s) if rng.random() < 0.5 else None
        color = tuple(int(v) for v in rng.integers(30, 160, 3))
        items.append({"specs": specs, "color": color, "heat": float(heat), "light": light, "size": s})
        if cool:  # a cool support (lamp pole) drawn before the warm part
            items.insert(len(items) - 1, {"specs": cool, "color": color, "heat": 0.0, "light": None, "size": s})
    return items


# ---- channels ----------------------------------------------------------------------------------

def _rgb_background(rng: np.random.Generator, h: int, w: int, horizon: float) -> np.ndarray:
    """(h, w, 3) float32 day background: sky and ground gradients plus texture."""
    sky = np.array(SKY_COLORS[rng.integers(len(SKY_COLORS))], dtype=np.float32) + rng.uniform(-20, 20, 3)
    ground = np.array(GROUND_COLORS[rng.integers(len(GROUND_COLORS))], dtype=np.float32) + rng.uniform(-20, 20, 3)
    y = np.arange(h, dtype=np.float32)[:, None, None]
    t_sky = np.clip(y / max(horizon, 1.0), 0, 1)
    t_gnd = np.clip((y - horizon) / max(h - horizon, 1.0), 0, 1)
    col = np.where(y < horizon, sky * (0.85 + 0.2 * t_sky), ground * (1.1 - 0.3 * t_gnd)).astype(np.float32)
    bg = np.broadcast_to(col, (h, w, 3)).copy()
    luma = 20 * _smooth_noise(rng, h, w, (5, 7)) + 10 * _smooth_noise(rng, h, w, (40, 52))
    bg += luma[..., None] + 6 * _smooth_noise(rng, h, w, (6, 8), 3)
    return bg


def _random_color(rng: np.random.Generator) -> tuple:
    """An RGB colour: mostly muted (mixed with grey), sometimes saturated."""
    c = rng.integers(0, 256, 3).astype(np.float64)
    mix = rng.uniform(0.2, 0.8) if rng.random() < 0.65 else 0.0
    c = (1 - mix) * c + mix * rng.uniform(40, 220)
    return tuple(int(v) for v in c)


def _thermal_background(rng: np.random.Generator, h: int, w: int, horizon: float, night: bool) -> np.ndarray:
    """(h, w) float32 ambient temperature: cool at night, sun-warmed and patchy by day."""
    sky, ground = (rng.uniform(15, 40), rng.uniform(40, 70)) if night else (rng.uniform(80, 120), rng.uniform(120, 160))
    y = np.arange(h, dtype=np.float32)[:, None]
    col = np.where(y < horizon, sky, ground + 10 * (y - horizon) / max(h - horizon, 1.0)).astype(np.float32)
    t = np.broadcast_to(col, (h, w)).copy()
    t += (8 if night else 20) * _smooth_noise(rng, h, w, (4, 6))
    t += (3 if night else 6) * _smooth_noise(rng, h, w, (30, 40))
    return t


def _night_rgb(rng: np.random.Generator, rgb: np.ndarray, lights: list) -> np.ndarray:
    """Darken a day render (h, w, 3) float32 into a night one: dim light, lamps, glare."""
    h, w = rgb.shape[:2]
    illum = np.full((h, w), rng.uniform(0.07, 0.15), dtype=np.float32)
    glare = np.zeros((h, w, 3), dtype=np.float32)
    extra = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 8)) for _ in range(int(rng.integers(1, 4)))]
    for x, y, r in list(lights) + extra:
        illum += rng.uniform(0.05, 0.3) * _blob(h, w, x, y, 4 * r + 15, 4 * r + 15)
        color = np.array([255, rng.uniform(180, 250), rng.uniform(90, 200)], dtype=np.float32)
        glare += rng.uniform(0.6, 1.2) * color * _blob(h, w, x, y, r + 1, r + 1)[..., None]
        glare += rng.uniform(0.05, 0.2) * color * _blob(h, w, x, y, 4 * r + 6, 4 * r + 6)[..., None]
    tint = np.array([0.9, 0.95, 1.1], dtype=np.float32)
    return rgb * illum[..., None] * tint + glare


def _add_noise(rng: np.random.Generator, rgb: np.ndarray, night: bool) -> np.ndarray:
    """Gaussian read noise plus shot noise (stronger at night) on (h, w, 3) float32."""
    sigma, shot = (rng.uniform(6, 10), rng.uniform(1.2, 1.8)) if night else (rng.uniform(2, 5), 0.3)
    std = np.sqrt(np.float32(sigma**2) + np.float32(shot**2) * np.maximum(rgb, 0))
    return rgb + std * rng.standard_normal(rgb.shape, dtype=np.float32)


def _event_edges(rng: np.random.Generator, event: np.ndarray, mask: np.ndarray) -> None:
    """Write ON/OFF edges of ``mask`` moved by a small random displacement into ``event``."""
    dx, dy = int(rng.integers(-3, 4)), int(rng.integers(-1, 2))
    if dx == 0 and dy == 0:
        dx = 1
    moved = _shift(mask, dx, dy)
    keep = rng.random(mask.shape, dtype=np.float32) < 0.85
    event[(moved > mask) & keep] = EVENT_ON
    event[(moved < mask) & keep] = EVENT_OFF


def _salt(rng: np.random.Generator, event: np.ndarray, density: float) -> None:
    """Random isolated ON/OFF events at ``density`` of the pixels."""
    u = rng.random(event.shape, dtype=np.float32)
    event[u < density / 2] = EVENT_ON
    event[(u >= density / 2) & (u < density)] = EVENT_OFF


def render_scene(rng: np.random.Generator, night: bool, num_classes: int) -> tuple[np.ndarray, list]:
    """Render one scene.

    Returns ``(image, boxes)``: image is an (H, W, 5) uint8 array (RGB, thermal, event) with
    H in [280, 320] and W in [370, 410]; boxes is a list of ``(cls, x0, y0, x1, y1)`` ints in
    pixels, the visible part of each object (x1, y1 exclusive, so 0 <= x0 < x1 <= W).
    """
    h = int(rng.integers(HEIGHT_RANGE[0], HEIGHT_RANGE[1] + 1))
    w = int(rng.integers(WIDTH_RANGE[0], WIDTH_RANGE[1] + 1))
    horizon = rng.uniform(0.3, 0.5) * h
    objects = _sample_objects(rng, h, w, horizon, num_classes)
    clutter = _sample_clutter(rng, h, w, horizon)
    warm = _sample_warm(rng, h, w, horizon, night)

    rgb = _rgb_background(rng, h, w, horizon)
    thermal = _thermal_background(rng, h, w, horizon, night)
    gain = rng.uniform(150, 190) if night else rng.uniform(20, 40)
    ambient = float(thermal.mean())
    for item in clutter + warm:
        _draw_all(rgb, item["specs"], item["color"])
        _draw_all(thermal, item["specs"], ambient + item["heat"] * gain)

    event = np.zeros((h, w), dtype=np.uint8)
    union = np.zeros((h, w), dtype=np.uint8)
    boxes = []
    for obj in objects:
        mask = np.zeros((h, w), dtype=np.uint8)
        for role, spec in obj["parts"]:
            _draw(rgb, spec, obj["colors"][role])
            _draw(thermal, spec, ambient + obj["heat"][role] * gain)
            _draw(mask, spec, 1)
        x, y, bw, bh = cv2.boundingRect(mask)
        if bw > 0 and bh > 0:
            boxes.append((obj["cls"], x, y, x + bw, y + bh))
        if rng.random() < 0.85:
            _event_edges(rng, event, mask)
        union |= mask
    # internal variation of the warm bodies (clothing, skin, exhaust)
    thermal += union * (0.05 * gain) * _smooth_noise(rng, h, w, (30, 40))
    _clutter_events(rng, event, clutter + warm)
    _salt(rng, event, rng.uniform(0.008, 0.015) if night else rng.uniform(0.002, 0.004))

    if night:
        rgb = _night_rgb(rng, rgb, [it["light"] for it in warm if it["light"] is not None])
    rgb = _add_noise(rng, rgb, night)
    thermal = cv2.GaussianBlur(thermal, (0, 0), 1.2) + rng.uniform(2, 4) * rng.standard_normal((h, w), dtype=np.float32)
    image = np.empty((h, w, 5), dtype=np.uint8)
    image[..., :3] = np.clip(rgb, 0, 255)
    image[..., 3] = np.clip(thermal, 0, 255)
    image[..., 4] = event
    return image, boxes


def _clutter_events(rng: np.random.Generator, event: np.ndarray, items: list[dict]) -> None:
    """Edges of a few small moving clutter items / distractors (cars, animals, flags)."""
    small = [it for it in items if it["size"] < 60]
    count = min(len(small), int(rng.integers(1, 5)))
    for k in (rng.choice(len(small), size=count, replace=False) if count else []):
        mask = np.zeros(event.shape, dtype=np.uint8)
        _draw_all(mask, small[int(k)]["specs"], 1)
        _event_edges(rng, event, mask)


# ---- data set ----------------------------------------------------------------------------------

def yolo_lines(boxes: list, h: int, w: int) -> str:
    """YOLO label text (one ``cls xc yc w h`` line per box, 6 decimals) for pixel boxes."""
    lines = [f"{c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
             for c, x0, y0, x1, y1 in boxes]
    return "".join(line + "\n" for line in lines)


def image_rng(seed: int, set_index: int, image_index: int) -> np.random.Generator:
    """The generator that renders image ``image_index`` of set ``set_index``."""
    return np.random.default_rng([seed, set_index, image_index])


def _unlabeled(seed: int, n: int, fraction: float) -> set[int]:
    """Indices of the main-set images written without a label file (fraction * n rounded half up)."""
    count = int(math.floor(fraction * n + 0.5))
    picker = np.random.default_rng([seed, 0, 2**31])
    return {int(i) for i in picker.choice(n, size=count, replace=False)} if count else set()


def _clear(folder: str, ext: str) -> None:
    """Remove stale ``*ext`` files of an earlier generation from ``folder``."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith(ext):
                os.remove(os.path.join(folder, name))


def area_bucket(x0: int, y0: int, x1: int, y1: int) -> str:
    """COCO size bucket of a pixel box: small (< 32^2), medium (< 96^2) or large."""
    area = (x1 - x0) * (y1 - y0)
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


def _write_set(root: str, set_index: int, n: int, seed: int, num_classes: int, unlabeled: set[int]) -> dict:
    """Render and write one set; return its counts and per-image records."""
    folder, prefix, night_flag = SETS[set_index]
    img_dir, lbl_dir = os.path.join(root, folder, "images"), os.path.join(root, folder, "labels")
    for d, ext in ((img_dir, ".npy"), (lbl_dir, ".txt")):
        os.makedirs(d, exist_ok=True)
        _clear(d, ext)
    counts = {"images": n, "labeled": 0, "unlabeled": 0, "empty": 0, "boxes": 0, "day": 0, "night": 0,
              "boxes_per_class": [0] * num_classes, "areas": {"small": 0, "medium": 0, "large": 0}}
    per_image = {}
    for i in range(n):
        night = bool(i % 2) if night_flag is None else night_flag
        image, boxes = render_scene(image_rng(seed, set_index, i), night, num_classes)
        stem = f"{prefix}{i:06d}"
        np.save(os.path.join(img_dir, stem + ".npy"), image)
        labeled = i not in unlabeled
        if labeled:
            with open(os.path.join(lbl_dir, stem + ".txt"), "w", encoding="utf-8", newline="\n") as f:
                f.write(yolo_lines(boxes, image.shape[0], image.shape[1]))
        counts["labeled" if labeled else "unlabeled"] += 1
        counts["empty"] += int(labeled and not boxes)
        counts["night" if night else "day"] += 1
        counts["boxes"] += len(boxes) if labeled else 0
        for c, *xyxy in (boxes if labeled else []):
            counts["boxes_per_class"][c] += 1
            counts["areas"][area_bucket(*xyxy)] += 1
        per_image[stem] = {"night": night, "labeled": labeled, "boxes": len(boxes)}
    return {"dir": folder or ".", "counts": counts, "images": per_image}


def synthetic_params(num_images: int = 400, num_day_test: int = 60, num_night_test: int = 60,
                     num_classes: int = 1, seed: int = 0, unlabeled_fraction: float = 0.05) -> dict:
    """The generation parameters as stored in ``manifest.json`` (for comparing runs)."""
    return {"format_version": FORMAT_VERSION, "num_images": int(num_images), "num_day_test": int(num_day_test),
            "num_night_test": int(num_night_test), "num_classes": int(num_classes), "seed": int(seed),
            "unlabeled_fraction": float(unlabeled_fraction)}


def make_synthetic_dataset(out: str, num_images: int = 400, num_day_test: int = 60, num_night_test: int = 60,
                           num_classes: int = 1, seed: int = 0, unlabeled_fraction: float = 0.05) -> dict:
    """Write a synthetic data root at ``out`` and return its manifest (also ``out/manifest.json``).

    The main root holds ``num_images`` images alternating day (even index) and night (odd),
    ``unlabeled_fraction * num_images`` (rounded) of them without a label file; ``daytest1`` and
    ``nighttest1`` hold ``num_day_test`` day and ``num_night_test`` night images, all labeled.
    Stale ``.npy``/``.txt`` files in the image/label folders and an old manifest are removed
    first. The same arguments give byte-identical files.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= unlabeled_fraction <= 1.0:
        raise ValueError(f"unlabeled_fraction must lie in [0, 1], got {unlabeled_fraction}")
    params = synthetic_params(num_images, num_day_test, num_night_test, num_classes, seed, unlabeled_fraction)
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # an interrupted run must not look complete
    names = class_names(num_classes)
    with open(os.path.join(out, "classes.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(n + "\n" for n in names))
    sizes = (num_images, num_day_test, num_night_test)
    sets = {}
    for s, n in enumerate(sizes):
        unlabeled = _unlabeled(seed, n, unlabeled_fraction) if s == 0 else set()
        sets[SET_NAMES[s]] = _write_set(out, s, n, seed, num_classes, unlabeled)
    manifest = {"generator": "cadet_d2.data.synthetic", "params": params, "classes": names,
                "image_height_range": list(HEIGHT_RANGE), "image_width_range": list(WIDTH_RANGE),
                "channels": ["r", "g", "b", "thermal", "event"], "sets": sets}
    with open(manifest_path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest
