"""``tools/check_data.py``: scan a data root and list every problem before training.

A data root holds ``images/<stem>.npy`` (H x W x C uint8) or ``pairs.csv`` (paired image files,
docs/data.md) and ``labels/<stem>.txt`` (YOLO lines ``class xc yc w h``), plus sets in
sub-folders with the same layout (``train``, ``test``, ``daytest1``, ...). For pairs every file
must exist with a readable header and decode as the loader decodes it (:func:`decode_pair_files`,
with the loader's reader :mod:`cadet_d2.data.images`: near-grey thermal/event files counted,
colour-mapped ones refused or, with a palette, mapped); a partner of another size than its RGB
image, a file with an EXIF orientation other than 1, and a pair whose partners' orientations
differ are warnings. The scan reads every image header (dtype, shape, truncation), decodes every
image (not with ``headers_only``) and reads every label line with the same functions the loader
uses (:mod:`cadet_d2.data.npy`, :mod:`cadet_d2.data.yolo`) and reports

* **errors** (exit code 1): things that stop registration or training: unreadable, truncated
  or pickled/object ``.npy`` files, wrong dtype or channel count, zero-size images, bad label
  lines (field count, non-numbers, NaN/inf, values outside [0, 1], unknown class ids), label
  files without an image, an empty ``classes.txt``, and duplicate stems within a set (``a.npy``
  and ``a.NPY``/``A.npy``: ambiguous pairing, and they collide on case-insensitive file systems);
* **warnings** (exit code 0): zero-area or sub-pixel boxes (dropped by the loader), boxes
  reaching more than half a pixel outside their image (clipped by the loader), files in
  ``images/`` that the loader ignores (not lowercase ``.npy``), and stems found in more than one
  set (the same image may be in training and test data; compare the files);

and a summary: images, labeled/unlabeled images, boxes, boxes per class, size range, and the
per-channel mean/std of the root's (training) images (or of the ``train`` set), usable as ``MODEL.PIXEL_MEAN``/``STD``
(on an evenly spaced subsample of ``max_stat_images`` images when there are more; the report
says so).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from .datasets import read_classes
from .errors import DataError, read_lines
from ..layout import DEFAULT_GREY_TOLERANCE
from .event_frames import decode_event_file, event_file_header, file_channels, read_event_file
from .images import ORIENTATIONS, decode_grey, image_header, is_jpeg, read_grey, read_rgb
from .npy import load_image, read_image_size
from .pairs import PAIRS_FILE, Pair, read_pairs_csv
from .yolo import MIN_BOX_PIXELS, parse_yolo_line, yolo_to_xyxy

ROOT_SET = "(root)"
POOL_MIN_IMAGES = 200  # fewer images are decoded in this process (starting workers costs more)
OUTSIDE_PIXELS = 0.5  # a box reaching further outside its image than this is reported (the loader clips it)


@dataclass
class Problem:
    severity: str  # "error" or "warning"
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{self.severity.upper():7s} {where}: {self.message}"


@dataclass
class SetSummary:
    name: str
    folder: str
    images: int = 0
    labeled: int = 0
    unlabeled: int = 0
    no_boxes: int = 0
    boxes: int = 0
    boxes_per_class: dict = field(default_factory=dict)
    min_hw: list | None = None
    max_hw: list | None = None
    kind: str = "npy"  # "npy" (images/<stem>.npy) or "pairs" (pairs.csv)
    decoded: bool = True  # every image decoded (False: --headers-only, headers read only)
    near_grey: dict = field(default_factory=dict)  # modality: [files, largest channel difference]
    palette: dict = field(default_factory=dict)  # modality: [files, largest mean residual] (THERMAL_PALETTE)
    rotated: int = 0  # files with an EXIF orientation other than 1 (applied)


@dataclass
class CheckReport:
    root: str
    channels: int
    classes: list
    classes_source: str
    sets: list = field(default_factory=list)
    pixel_mean: list | None = None
    pixel_std: list | None = None  # suggested: the measured std, 1.0 for a constant channel (never 0)
    constant_channels: list = field(default_factory=list)  # file channels with one value in every image
    stats_channels: list = field(default_factory=list)  # paired files: the channels of the mean/std
    stats_set: str = ROOT_SET
    stats_images: int = 0
    stats_total: int = 0
    stats_reduced: bool = False  # paired files: JPEGs decoded at 1/4 size for the mean/std
    grey_tolerance: int = DEFAULT_GREY_TOLERANCE
    thermal_palette: str = ""
    problems: list = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["num_errors"], d["num_warnings"] = len(self.errors), len(self.warnings)
        return d

    def format(self) -> str:
        """The human-readable report."""
        kinds = {s.kind for s in self.sets}
        what = (f"{self.channels}-channel .npy images" if kinds == {"npy"} else "paired image files"
                if kinds == {"pairs"} else f"{self.channels}-channel .npy images and paired image files")
        out = [f"Data root {self.root}: {what}, {len(self.classes)} class(es) "
               f"{self.classes} ({self.classes_source})"]
        rows = [("set", "images", "labeled", "unlabeled", "no boxes", "boxes", "sizes (H x W)")]
        for s in self.sets:
            sizes = (f"{s.min_hw[0]}x{s.min_hw[1]} .. {s.max_hw[0]}x{s.max_hw[1]}" if s.min_hw else "-")
            rows.append((s.name, s.images, s.labeled, s.unlabeled, s.no_boxes, s.boxes, sizes))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            out.append("  " + "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in
                                        enumerate(zip(r, widths))))
        for s in self.sets:
            where = "" if s.name == ROOT_SET else f" ({s.name})"
            for m, (n, diff) in sorted(s.near_grey.items()):
                out.append(f"{n} near-grey 3-channel {m} file(s){where}, largest channel difference {diff} "
                           f"(CADET.INPUT.GREY_TOLERANCE {self.grey_tolerance}): read as grey (their luma)")
            for m, (n, residual) in sorted(s.palette.items()):
                out.append(f"{n} colour {m} file(s){where} mapped back through palette {self.thermal_palette}, "
                           f"largest mean residual {residual:.1f}")
            if s.rotated:
                out.append(f"{s.rotated} file(s){where} with an EXIF orientation other than 1: rotated/flipped as "
                           "tagged (boxes are on the pixels so shown)")
        if any(not s.decoded for s in self.sets):
            out.append("Pixels not checked (--headers-only): headers only; a file the loader refuses (colour "
                       "thermal, corrupt data) is not found; run without --headers-only to decode every image")
        total: Counter = Counter()
        for s in self.sets:
            total.update({int(k): v for k, v in s.boxes_per_class.items()})
        if total:
            repeated = " (a stem in two sets counts twice)" if any("stem(s) in both" in p.message
                                                                   for p in self.warnings) else ""
            out.append(f"Boxes per class, all sets{repeated}: " + ", ".join(
                f"{c} {self.classes[c] if c < len(self.classes) else '?'}: {n}" for c, n in sorted(total.items())))
        if self.pixel_mean is not None:
            sub = (f"an evenly spaced subsample of {self.stats_images} of {self.stats_total} images"
                   if self.stats_images < self.stats_total else f"all {self.stats_total} images")
            if self.stats_channels:
                out.append(f"Per-channel mean/std of the {self.stats_set} pairs, channels {self.stats_channels} "
                           f"({sub}{'; JPEGs at 1/4 size' if self.stats_reduced else ''}; keep the entries of "
                           "CADET.INPUT.MODALITIES, in its order):")
            else:
                out.append(f"Per-channel mean/std of the {ROOT_SET} images, file channels 0..{self.channels - 1} "
                           f"({sub}; the model order with the default CADET.INPUT.LAYOUT):")
            out.append(f"  MODEL.PIXEL_MEAN: {[round(v, 1) for v in self.pixel_mean]}")
            out.append(f"  MODEL.PIXEL_STD: {[round(v, 1) for v in self.pixel_std]}")
            for c in self.constant_channels:
                which = f"channel {self.stats_channels[c]}" if self.stats_channels else f"file channel {c}"
                out.append(f"  {which} is constant ({round(self.pixel_mean[c], 1)} in every pixel): its "
                           "std is 0, so 1.0 is given above; better drop that modality from "
                           "CADET.INPUT.MODALITIES (e.g. [rgb, thermal] without an event camera)")
        elif self.sets:
            out.append(f"No per-channel mean/std: they are measured on the {ROOT_SET} set or the train set, "
                       "and this root has neither (or none of its images is readable)")
        out.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        out += [str(p) for p in self.errors + self.warnings]
        return "\n".join(out)


def _is_set(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, "images")) or os.path.isfile(os.path.join(folder, PAIRS_FILE))


def find_sets(root: str) -> list[tuple[str, str]]:
    """(name, folder) of the root (if it has images/ or pairs.csv) and of every such sub-folder."""
    sets = [(ROOT_SET, root)] if _is_set(root) else []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if name not in ("images", "labels", "ignore") and _is_set(folder):
            sets.append((name, folder))
    return sets


def decode_pair_files(files: dict[str, str], tolerance: int, palette: str) -> dict:
    """Decode every file of a pair as the loader does (:mod:`cadet_d2.data.images`): RGB JPEGs at
    1/8 size (its verdict does not depend on the size), thermal and event files at full size (the
    size whose channel differences are the largest). Returns {modality: GreyVerdict, or None for
    rgb, or (path, problem) for a file the loader refuses}."""
    out: dict = {}
    for m, path in files.items():
        try:
            if m == "rgb":
                read_rgb(path, 8 if is_jpeg(path) else 1)
                out[m] = None
            elif m == "event":  # a grey image, or an (H, W, E) .npy event frame (verdict None)
                out[m] = decode_event_file(path, file_channels(path), tolerance=tolerance, verdict_only=True)[1]
            else:
                out[m] = decode_grey(path, 1, tolerance=tolerance, palette=palette, verdict_only=True)[1]
        except DataError as e:
            out[m] = (e.path, e.problem)
        except Exception as e:  # noqa: BLE001  (a decoder's own failure is this file's problem, not a traceback)
            out[m] = (path, f"could not be decoded: {type(e).__name__}: {e}")
    return out


class _Scanner:
    def __init__(self, report: CheckReport, progress, decode: bool = True, pool=None) -> None:
        self.report, self.progress, self.decode, self.pool = report, progress, decode, pool

    def problem(self, severity: str, path: str, message: str, line: int | None = None) -> None:
        self.report.problems.append(Problem(severity, path, message, line))

    def scan_set(self, name: str, folder: str) -> tuple[SetSummary, dict[str, tuple[int, int] | None]]:
        """Check one set; returns its summary and {stem: (H, W) or None if unreadable}."""
        s = SetSummary(name, folder)
        image_dir, label_dir = os.path.join(folder, "images"), os.path.join(folder, "labels")
        entries = sorted(os.listdir(image_dir))
        by_key: dict[str, list[str]] = {}
        stems = []
        for f in entries:
            path = os.path.join(image_dir, f)
            if not os.path.isfile(path):
                continue
            if f.lower().endswith(".npy"):
                by_key.setdefault(f[:-4].lower(), []).append(f)
            if f.endswith(".npy"):
                stems.append(f[:-4])
            elif f.lower().endswith(".npy"):
                self.problem("warning", path, "ignored by the loader: the extension must be lowercase .npy")
            else:
                self.problem("warning", path, "not a .npy image; ignored by the loader")
        for names in by_key.values():
            if len(names) > 1:
                self.problem("error", os.path.join(image_dir, names[0]),
                             f"duplicate stem: {', '.join(names)} (ambiguous image/label pairing; the files "
                             "collide on case-insensitive file systems); keep one")
        sizes: dict[str, tuple[int, int] | None] = {}
        for stem in stems:
            path = os.path.join(image_dir, stem + ".npy")
            try:
                sizes[stem] = read_image_size(path, self.report.channels)
                if self.decode:
                    load_image(path, self.report.channels)
            except DataError as e:
                sizes[stem] = None
                self.problem("error", path, e.problem)
            self.progress.update(1)
        _size_range(s, sizes)
        s.images, s.decoded = len(stems), self.decode
        self.scan_label_dir(s, label_dir, stems, sizes)
        return s, sizes

    def scan_label_dir(self, s: SetSummary, label_dir: str, stems: list[str],
                       sizes: dict[str, tuple[int, int] | None]) -> None:
        """Label files of a set: orphans, per-line checks, counts into ``s``."""
        labels = sorted(os.listdir(label_dir)) if os.path.isdir(label_dir) else []
        label_stems = set()
        for f in labels:
            path = os.path.join(label_dir, f)
            if not os.path.isfile(path):
                continue
            if not f.endswith(".txt"):
                self.problem("warning", path, "not a .txt label file; ignored by the loader")
                continue
            label_stems.add(f[:-4])
            if f[:-4] not in sizes:
                self.problem("error", path, "label file without an image (the loader stops on it)")
        per_class: Counter = Counter()
        for stem in stems:
            path = os.path.join(label_dir, stem + ".txt")
            if stem not in label_stems:
                s.unlabeled += 1
                continue
            s.labeled += 1
            n = self.scan_labels(path, sizes[stem], per_class)
            s.boxes += n
            s.no_boxes += n == 0
        s.boxes_per_class = {str(k): v for k, v in sorted(per_class.items())}

    def scan_pair_set(self, name: str, folder: str) -> tuple[SetSummary, dict, list[Pair]]:
        """Check a set of paired files (``pairs.csv``): every file exists, has a readable header and
        (unless headers only) decodes as the loader decodes it; partners of another size than the
        RGB image are warned about (resized by default), and EXIF orientations counted."""
        s = SetSummary(name, folder, kind="pairs", decoded=self.decode)
        csv_path = os.path.join(folder, PAIRS_FILE)
        try:
            pairs = read_pairs_csv(csv_path)
        except DataError as e:
            self.problem("error", e.path, e.problem, e.line)
            return s, {}, []
        sizes: dict[str, tuple[int, int] | None] = {}
        readable = []
        rotated: list[str] = []
        disagree: list[str] = []
        for pair in pairs:
            hw: dict[str, tuple[int, int]] = {}
            turns: dict[str, int] = {}
            for m, path in pair.files.items():
                if not os.path.isfile(path):
                    self.problem("error", csv_path, f"{m} file {path} not found", pair.line)
                    continue
                try:
                    h, w, turns[m] = event_file_header(path) if m == "event" else image_header(path)
                    hw[m] = (h, w)
                except DataError as e:
                    self.problem("error", e.path, e.problem)
            sizes[pair.stem] = hw.get("rgb")
            for m, size in hw.items():
                if "rgb" in hw and size != hw["rgb"]:
                    self.problem("warning", pair.files[m], f"{m} image is {size[0]}x{size[1]}, the RGB image is "
                                 f"{hw['rgb'][0]}x{hw['rgb'][1]}: resized to the RGB size (CADET.INPUT.SIZE_MISMATCH "
                                 "resize; 'error' stops on it)")
            rotated += [f"{pair.files[m]} ({t}: {ORIENTATIONS[t]})" for m, t in turns.items() if t != 1]
            if len(set(turns.values())) > 1:
                disagree.append(f"{pair.stem} ({', '.join(f'{m} {t}' for m, t in turns.items())})")
            if len(hw) == len(pair.files):
                readable.append(pair)
            if not self.decode:
                self.progress.update(1)
        good = self.decode_pairs(s, readable) if self.decode else readable
        s.rotated = len(rotated)
        if rotated:
            self.problem("warning", folder, f"{len(rotated)} file(s) with an EXIF orientation other than 1, rotated or "
                         f"flipped as tagged by the loader (e.g. {'; '.join(rotated[:3])})")
        if disagree:
            self.problem("warning", folder, f"{len(disagree)} pair(s) whose files have different EXIF orientations "
                         f"(e.g. {'; '.join(disagree[:3])}): each is turned as tagged; check that the pairs still "
                         "align")
        _size_range(s, sizes)
        s.images = len(pairs)
        self.scan_label_dir(s, os.path.join(folder, "labels"), [p.stem for p in pairs], sizes)
        return s, sizes, good

    def decode_pairs(self, s: SetSummary, pairs: list[Pair]) -> list[Pair]:
        """Decode every file of ``pairs`` (:func:`decode_pair_files`, in the pool when there is one);
        their problems are errors, their verdicts counted into ``s``; returns the pairs that decode."""
        args = [(p.files, self.report.grey_tolerance, self.report.thermal_palette) for p in pairs]
        results = (self.pool.imap(_decode_args, args, chunksize=8) if self.pool is not None
                   else map(_decode_args, args))
        good = []
        for pair, result in zip(pairs, results):
            ok = True
            for m, v in result.items():
                if isinstance(v, tuple):
                    self.problem("error", v[0], v[1])
                    ok = False
                elif v is not None and v.kind == "near-grey":
                    n, diff = s.near_grey.get(m, (0, 0))
                    s.near_grey[m] = [n + 1, max(diff, v.channel_difference)]
                elif v is not None and v.kind == "palette":
                    n, residual = s.palette.get(m, (0, 0.0))
                    s.palette[m] = [n + 1, max(residual, round(v.residual, 2))]
            if ok:
                good.append(pair)
            self.progress.update(1)
        return good

    def scan_labels(self, path: str, hw: tuple[int, int] | None, per_class: Counter) -> int:
        try:
            lines = read_lines(path, "label")
        except DataError as e:
            self.problem("error", e.path, e.problem)
            return 0
        boxes = 0
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                cls, box = parse_yolo_line(path, lineno, line, len(self.report.classes))
            except DataError as e:
                self.problem("error", path, e.problem, e.line)
                continue
            if box[2] == 0 or box[3] == 0:
                self.problem("warning", path, f"zero-area box {line.strip()!r} (dropped by the loader)", lineno)
                continue
            if hw is not None:
                over = _outside_pixels(box, hw)
                if over > OUTSIDE_PIXELS:
                    self.problem("warning", path, f"box {line.strip()!r} reaches {over:.1f} px outside the "
                                 f"{hw[0]}x{hw[1]} image (clipped to it by the loader)", lineno)
                x0, y0, x1, y1 = yolo_to_xyxy(box, hw[1], hw[0])
                if x1 - x0 < MIN_BOX_PIXELS or y1 - y0 < MIN_BOX_PIXELS:
                    self.problem("warning", path, f"box {line.strip()!r} is empty after clipping to the "
                                 f"{hw[0]}x{hw[1]} image (dropped by the loader)", lineno)
                    continue
            per_class[cls] += 1
            boxes += 1
        return boxes


def _decode_args(args: tuple) -> dict:
    return decode_pair_files(*args)


def _outside_pixels(box: list[float], hw: tuple[int, int]) -> float:
    """How far (pixels) a normalised [xc, yc, w, h] box reaches outside an (H, W) image (<= 0: inside)."""
    xc, yc, w, h = box
    height, width = hw
    return max(-(xc - w / 2) * width, (xc + w / 2 - 1) * width, -(yc - h / 2) * height, (yc + h / 2 - 1) * height)


def _channel_stats(paths: list[str], channels: int) -> tuple[list[float], list[float]]:
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for p in paths:
        x = load_image(p, channels).reshape(-1, channels).astype(np.float64)
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return mean.tolist(), std.tolist()


def _pair_stats(pairs: list[Pair], tolerance: int, palette: str,
                problems: list) -> tuple[list[float], list[float], list[str], bool] | None:
    """Mean/std of the channels of paired files (rgb R, G, B, then thermal, event as present), JPEGs
    decoded at 1/4 size (mean and std barely change; 10x faster), and whether any JPEG was; a
    pair the loader refuses (met here with headers only) is an error in ``problems``, left out;
    None when none is left.

    Each modality is summed over its own pixels: a partner of another size or decoded at
    another scale (a PNG thermal beside a JPEG RGB image) counts all of its pixels."""
    names = [m for m in ("rgb", "thermal", "event") if m in pairs[0].files]
    total = {m: 0.0 for m in names}
    total_sq = {m: 0.0 for m in names}
    count = {m: 0 for m in names}
    reduced = False
    for pair in pairs:
        try:
            xs = {}
            for m in names:
                f = 4 if is_jpeg(pair.files[m]) else 1
                if m == "rgb":
                    xs[m] = read_rgb(pair.files[m], f)
                elif m == "event":  # a grey image, or an (H, W, E) .npy event frame
                    xs[m] = read_event_file(pair.files[m], file_channels(pair.files[m]), f, tolerance=tolerance)
                else:
                    xs[m] = read_grey(pair.files[m], f, tolerance=tolerance, palette=palette)[:, :, None]
        except DataError as e:
            problems.append(Problem("error", e.path, f"{e.problem} (met by the mean/std pass)"))
            continue
        for m, x in xs.items():
            reduced |= is_jpeg(pair.files[m])
            x = x.reshape(-1, x.shape[2]).astype(np.float64)
            total[m] = total[m] + x.sum(0)
            total_sq[m] = total_sq[m] + (x * x).sum(0)
            count[m] += x.shape[0]
    if not count[names[0]]:
        return None
    mean = np.concatenate([np.atleast_1d(total[m] / count[m]) for m in names])
    mean_sq = np.concatenate([np.atleast_1d(total_sq[m] / count[m]) for m in names])
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    n_event = file_channels(pairs[0].files["event"]) if "event" in names else 1
    labels = [c for m in names for c in (["rgb.R", "rgb.G", "rgb.B"] if m == "rgb" else
                                         [f"event.{i}" for i in range(n_event)] if m == "event" and n_event > 1
                                         else [m])]
    return mean.tolist(), std.tolist(), labels, reduced


def suggested_std(std: list[float]) -> tuple[list[float], list[int]]:
    """(std with 1.0 for every channel whose std rounds to 0.0, those channels): a PIXEL_STD of 0
    would divide by zero (``validate_cadet_config`` refuses it)."""
    constant = [c for c, v in enumerate(std) if round(v, 1) == 0.0]
    return [1.0 if c in constant else v for c, v in enumerate(std)], constant


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _count_images(sets: list[tuple[str, str]]) -> int:
    """Images (``.npy`` files) and pairs (lines of ``pairs.csv``) of the sets, for the progress bar."""
    n = 0
    for _, folder in sets:
        csv_path, d = os.path.join(folder, PAIRS_FILE), os.path.join(folder, "images")
        if os.path.isfile(csv_path):
            with open(csv_path, "rb") as f:
                n += max(sum(1 for line in f if line.strip()) - 1, 0)
        elif os.path.isdir(d):
            n += len(os.listdir(d))
    return n


def check_root(
    root: str,
    channels: int = 5,
    num_classes: int | None = None,
    max_stat_images: int = 500,
    progress: bool | None = None,
    headers_only: bool = False,
    grey_tolerance: int = DEFAULT_GREY_TOLERANCE,
    thermal_palette: str = "",
    workers: int = 1,
) -> CheckReport:
    """Scan ``root`` and its test sets; see the module docstring for what is checked.

    ``num_classes`` = None reads ``root/classes.txt`` (or one class ``object``), as the loader
    does without ``CADET.DATA.CLASSES``. ``progress`` None = a tqdm bar (pairs or images per
    second) for roots of 1000+ images. ``headers_only``: read headers, decode no pixels.
    ``grey_tolerance``, ``thermal_palette``: as ``CADET.INPUT.GREY_TOLERANCE`` and
    ``THERMAL_PALETTE``. ``workers`` > 1 decodes pairs in that many processes.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root!r} is not a folder")
    report = CheckReport(root=root, channels=channels, classes=[], classes_source="",
                         grey_tolerance=grey_tolerance, thermal_palette=thermal_palette)
    if num_classes is not None:
        report.classes, report.classes_source = [str(i) for i in range(num_classes)], "--classes"
    else:
        try:
            report.classes = read_classes(root)
            report.classes_source = ("classes.txt" if os.path.isfile(os.path.join(root, "classes.txt"))
                                     else "no classes.txt: the loader's default; set CADET.DATA.CLASSES for more")
        except DataError as e:
            report.problems.append(Problem("error", e.path, e.problem))
            report.classes, report.classes_source = ["object"], "classes.txt unusable"
    sets = find_sets(root)
    if not sets:
        report.problems.append(Problem("error", root, "no set: no images/ folder (images/*.npy and labels/*.txt) "
                                                      "and no pairs.csv, in the root or a sub-folder"))
    total = _count_images(sets)
    if progress is None:
        progress = total >= 1000
    bar = _NoProgress()
    if progress:
        from tqdm import tqdm
        paired = any(os.path.isfile(os.path.join(f, PAIRS_FILE)) for _, f in sets)
        bar = tqdm(total=total, desc="check_data" + (" (headers)" if headers_only else ""),
                   unit="pair" if paired else "image", file=sys.stderr)
    pool = None
    if workers > 1 and not headers_only and total >= POOL_MIN_IMAGES:
        import multiprocessing

        pool = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers)
    scanner = _Scanner(report, bar, decode=not headers_only, pool=pool)
    stems_by_set: dict[str, set[str]] = {}
    stat_paths: list = []
    stat_set = ROOT_SET if any(n == ROOT_SET for n, _ in sets) else "train"  # CADET.DATA.TRAIN_SET train
    try:
        for name, folder in sets:
            if os.path.isfile(os.path.join(folder, PAIRS_FILE)):
                summary, sizes, good = scanner.scan_pair_set(name, folder)
                if name == stat_set:
                    stat_paths = good
            else:
                summary, sizes = scanner.scan_set(name, folder)
                if name == stat_set:
                    stat_paths = [os.path.join(folder, "images", s + ".npy") for s, hw in sorted(sizes.items()) if hw]
            report.sets.append(summary)
            stems_by_set[name] = set(sizes)
        report.stats_total = len(stat_paths)
        if stat_paths:
            if len(stat_paths) > max_stat_images:
                pick = np.linspace(0, len(stat_paths) - 1, max_stat_images).round().astype(int)
                stat_paths = [stat_paths[i] for i in pick]
            report.stats_images = len(stat_paths)
            if isinstance(stat_paths[0], Pair):
                stats = _pair_stats(stat_paths, grey_tolerance, thermal_palette, report.problems)
                if stats is not None:
                    report.pixel_mean, std, report.stats_channels, report.stats_reduced = stats
                    report.stats_set = stat_set
            else:
                report.pixel_mean, std = _channel_stats(stat_paths, channels)
            if report.pixel_mean is not None:
                report.pixel_std, report.constant_channels = suggested_std(std)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    for (a, sa), (b, sb) in itertools.combinations(stems_by_set.items(), 2):
        both = sorted(sa & sb)
        if both:
            report.problems.append(Problem(
                "warning", os.path.join(root, b if a == ROOT_SET else a),
                f"{len(both)} stem(s) in both {a} and {b} (e.g. {', '.join(both[:5])}): the same image in two "
                "sets, e.g. training and test? compare the files"))
    return report


def main(argv: list[str] | None = None) -> int:
    """The ``tools/check_data.py`` command line; returns the exit code (1 when there are errors)."""
    ap = argparse.ArgumentParser(description="Check a cadet_d2 data root (images/*.npy or pairs.csv, labels/*.txt, "
                                             "test sets) and print a summary and every problem.")
    ap.add_argument("root", help="data root (CADET.DATA.ROOT)")
    ap.add_argument("--channels", type=int, default=5, help="channels each image must have (default 5)")
    ap.add_argument("--classes", type=int, default=None,
                    help="number of classes (default: ROOT/classes.txt, or 1 class when absent)")
    ap.add_argument("--max-stat-images", type=int, default=500,
                    help="images used for the per-channel mean/std (evenly spaced subsample; default 500)")
    ap.add_argument("--json", metavar="OUT", help="also write the summary and problems as JSON")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--headers-only", action="store_true",
                    help="read image headers only, decode no pixels (quick; files the loader refuses may pass)")
    ap.add_argument("--grey-tolerance", type=int, default=DEFAULT_GREY_TOLERANCE,
                    help="as CADET.INPUT.GREY_TOLERANCE (default %(default)s)")
    ap.add_argument("--thermal-palette", default="", help="as CADET.INPUT.THERMAL_PALETTE (default: none)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes decoding the pairs (default %(default)s)")
    args = ap.parse_args(argv)
    from .palettes import NAMES

    if not 0 <= args.grey_tolerance <= 255:
        print(f"ERROR   --grey-tolerance {args.grey_tolerance} must be in 0..255 (grey levels)", file=sys.stderr)
        return 1
    if args.thermal_palette and args.thermal_palette not in NAMES:
        print(f"ERROR   --thermal-palette {args.thermal_palette!r} is not one of {', '.join(NAMES)}", file=sys.stderr)
        return 1
    try:
        report = check_root(args.root, args.channels, args.classes, args.max_stat_images,
                            progress=False if args.no_progress else None, headers_only=args.headers_only,
                            grey_tolerance=args.grey_tolerance, thermal_palette=args.thermal_palette,
                            workers=args.workers)
    except (FileNotFoundError, OSError) as e:
        print(f"ERROR   {e}", file=sys.stderr)
        return 1
    print(report.format())
    if args.json:
        from ..utils.io import atomic_write_json
        atomic_write_json(args.json, report.to_dict())
    return 1 if report.errors else 0


def _size_range(s, sizes: dict) -> None:
    """Smallest and largest (height, width) of the readable images of a set, into ``s``."""
    ok = [hw for hw in sizes.values() if hw is not None]
    if ok:
        s.min_hw = [min(h for h, _ in ok), min(w for _, w in ok)]
        s.max_hw = [max(h for h, _ in ok), max(w for _, w in ok)]
