"""Sets of paired image files: one file per modality with the same stem.

Two ways to name the pairs of a set:

* an index ``<set>/pairs.csv``: header ``stem,rgb,thermal`` (optionally ``,event``), one row per
  pair; paths absolute or relative to the folder holding pairs.csv;
* folders per modality (``CADET.DATA.FOLDERS``): ``{rgb: visible/train, thermal: infrared/train}``,
  files paired by stem (the name without its extension).

Either gives :class:`Pair` records; whether each file exists is checked when the set is loaded
(so that ``CADET.DATA.ON_ERROR skip`` can drop one pair and count it).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from ..layout import IMAGE_EXTENSIONS, PAIR_CHANNELS
from .errors import DataError
from .event_frames import EVENT_FRAME_EXTENSIONS
from .images import check_complete, image_size

PAIRS_FILE = "pairs.csv"


@dataclass
class Pair:
    """One pair: ``files`` {modality: path}; ``source``/``line``: where it was named (for errors);
    ``missing`` {modality: problem} for a partner that could not be found."""

    stem: str
    files: dict
    source: str
    line: int | None = None
    missing: dict = field(default_factory=dict)

    def checked_files(self, modalities) -> dict:
        """{modality: file} of ``modalities``; :class:`DataError` naming where the pair was named
        (file and line) when one of them has no file, or its file does not exist."""
        for m in modalities:
            if m in self.missing:
                raise DataError(self.source, self.missing[m], self.line)
            if m not in self.files:
                raise DataError(self.source, f"pair {self.stem} has no {m} file (CADET.INPUT.MODALITIES has {m})",
                                self.line)
            if not os.path.isfile(self.files[m]):
                raise DataError(self.source, f"{m} file {self.files[m]} not found", self.line)
        return {m: self.files[m] for m in modalities}

    def record(self, modalities) -> dict:
        """The dataset dict of this pair without annotations: ``file_name`` (the RGB file),
        ``pair`` {modality: file} of ``modalities`` (:meth:`checked_files`) and the RGB image's
        ``height``/``width`` (from its header); a truncated file of ``modalities`` is a DataError."""
        files = self.checked_files(modalities)
        height, width = image_size(self.files["rgb"])
        for m in modalities:
            if m != "rgb":
                check_complete(files[m])
        return {"file_name": self.files["rgb"], "pair": files, "height": height, "width": width}


def read_pairs_csv(path: str) -> list[Pair]:
    """The pairs of an index file, in file order; errors name the file and line."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"unreadable pairs index: {e}") from None
    if not rows:
        raise DataError(path, "empty pairs index; expected a header 'stem,rgb,thermal' (optionally ',event')")
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header[1:] if h not in PAIR_CHANNELS]
    if not header or header[0] != "stem" or "rgb" not in header or unknown or len(set(header)) != len(header):
        raise DataError(path, f"header {','.join(header)!r} is not 'stem,rgb,thermal' (optionally ',event'; "
                              f"modalities are {list(PAIR_CHANNELS)})", 1)
    pairs, seen = [], {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(path, f"{len(row)} fields, the header has {len(header)}: {','.join(row)!r}", lineno)
        stem = row[0].strip()
        if not stem:
            raise DataError(path, "empty stem", lineno)
        if stem in seen:
            raise DataError(path, f"duplicate stem {stem!r} (also on line {seen[stem]})", lineno)
        seen[stem] = lineno
        files, missing = {}, {}
        for name, cell in zip(header[1:], row[1:]):
            cell = cell.strip()
            if cell:
                files[name] = os.path.normpath(os.path.join(folder, cell))
            elif name == "rgb":  # the file that names the pair (and gives its size)
                raise DataError(path, f"empty rgb path for stem {stem!r}", lineno)
            else:  # an error when the pair is read with that modality (ON_ERROR skip: that pair only)
                missing[name] = f"empty {name} path for stem {stem!r}"
        pairs.append(Pair(stem, files, path, lineno, missing))
    return pairs


def _by_stem(folder: str, extensions=IMAGE_EXTENSIONS) -> dict[str, str]:
    """{stem: path} of the image files (``extensions``) of ``folder``; two files with one stem are an error."""
    if not os.path.isdir(folder):
        raise DataError(folder, "folder not found (CADET.DATA.FOLDERS)")
    out: dict[str, str] = {}
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        if ext.lower() not in extensions:
            continue
        path = os.path.join(folder, f)
        if stem in out:
            raise DataError(path, f"two images with the stem {stem!r} ({os.path.basename(out[stem])} and {f}): "
                                  "the pairing is ambiguous")
        out[stem] = path
    return out


def scan_folders(folders: dict[str, str]) -> list[Pair]:
    """Pairs of folders per modality (``{modality: folder}``, ``rgb`` required), sorted by stem.

    A stem of the RGB folder without a file in another folder gets ``missing[modality]``."""
    if "rgb" not in folders:
        raise ValueError(f"CADET.DATA.FOLDERS names no rgb folder ({folders}); the labels are normalised to the "
                         "RGB image, so the RGB folder defines the pairs")
    # an event folder may also hold .npy event frames of several channels (CADET.INPUT.EVENT_CHANNELS)
    index = {m: _by_stem(d, IMAGE_EXTENSIONS + (EVENT_FRAME_EXTENSIONS if m == "event" else ()))
             for m, d in folders.items()}
    if not index["rgb"]:
        raise DataError(folders["rgb"], f"no image files ({', '.join(IMAGE_EXTENSIONS)})")
    pairs = []
    for stem, rgb_path in sorted(index["rgb"].items()):
        files, missing = {"rgb": rgb_path}, {}
        for m, found in index.items():
            if m == "rgb":
                continue
            if stem in found:
                files[m] = found[stem]
            else:
                missing[m] = f"no {m} partner: no file {stem}.* in {folders[m]}"
        pairs.append(Pair(stem, files, rgb_path, None, missing))
    return pairs
