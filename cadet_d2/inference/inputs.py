"""Which images a prediction run reads: paths on the command line -> ``.npy`` files and pairs.

An input is a ``.npy`` path (str) or a :class:`~cadet_d2.data.pairs.Pair` of image files named
by a ``pairs.csv`` index (the data format of paired sets, docs/data.md).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Union

from ..data.pairs import PAIRS_FILE, Pair, read_pairs_csv
from ..layout import IMAGE_EXTENSIONS

Input = Union[str, Pair]

# What to give for paired image files (an image file or a folder of them was given).
PAIRS_HINT = ("; paired image files are read through a pairs.csv index: tools/convert_dataset.py writes "
              "OUT/<set>/pairs.csv, and a one-pair index is the header 'stem,rgb,thermal' and one line "
              "'<stem>,<rgb file>,<thermal file>'")


def input_path(item: Input) -> str:
    """The file that names an input: the ``.npy`` file, or a pair's RGB file."""
    return item.files["rgb"] if isinstance(item, Pair) else item


def _npy_in(folder: str, recursive: bool) -> list[str]:
    if not recursive:
        return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                      if f.endswith(".npy") and os.path.isfile(os.path.join(folder, f)))
    found = []
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(here, f) for f in sorted(files) if f.endswith(".npy")]
    return found


def collect_inputs(paths: list[str], recursive: bool = False) -> list[Input]:
    """The inputs named by ``paths``, in order, each once (a pair: once per distinct set of files).

    A ``.npy`` file is taken as it is; a ``.csv`` file is a pairs index and gives its pairs in
    file order (errors name the file and line); a folder gives its ``*.npy`` files sorted
    by name, and with ``recursive`` those of every sub-folder too (depth first, sorted). A data
    root is a folder whose images sit in ``images/``: give ``ROOT/images``. Raises
    ``FileNotFoundError`` naming a path that does not exist, ``ValueError`` naming a file that is
    neither ``.npy`` nor ``.csv`` or a folder without any ``.npy`` file (or no path at all).
    """
    if not paths:
        raise ValueError("no input given: name .npy files, folders holding them, or pairs.csv indexes")
    files: list[Input] = []
    for p in paths:
        if os.path.isdir(p):
            found = _npy_in(p, recursive)
            if not found:
                hint = ""
                if os.path.isdir(os.path.join(p, "images")):
                    hint = f" (a data root? give {os.path.join(p, 'images')}, or --recursive for every set)"
                elif not recursive and _npy_in(p, True):
                    hint = " (its sub-folders have some: use --recursive)"
                elif os.path.isfile(os.path.join(p, PAIRS_FILE)):
                    hint = f" (a set of paired files? give {os.path.join(p, PAIRS_FILE)})"
                elif any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(p)):
                    hint = f", only image files{PAIRS_HINT}"
                raise ValueError(f"{p}: folder holds no .npy image{hint}")
            files += found
        elif os.path.isfile(p) and p.endswith(".csv"):
            files += read_pairs_csv(p)
        elif os.path.isfile(p):
            if not p.endswith(".npy"):
                hint = PAIRS_HINT if p.lower().endswith(IMAGE_EXTENSIONS) else ""
                raise ValueError(f"{p}: not a .npy image (expected an (H, W, C) uint8 .npy file) "
                                 f"nor a pairs.csv index{hint}")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    seen: set = set()
    unique = []
    for f in files:  # a pair is a duplicate only when every file of it is the same
        key = (tuple(sorted((m, os.path.abspath(x)) for m, x in f.files.items())) if isinstance(f, Pair)
               else os.path.abspath(f))
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def output_names(inputs: list[Input]) -> list[str]:
    """A distinct output name per input: its stem (a pair's own), or, where two share a stem, the
    path relative to their common folder with ``/`` replaced by ``__`` (``day/a.npy`` -> ``day__a``)."""
    files = [input_path(f) for f in inputs]
    stems = [f.stem if isinstance(f, Pair) else os.path.splitext(os.path.basename(f))[0] for f in inputs]
    counts = Counter(stems)
    if all(counts[s] == 1 for s in stems):
        return stems
    common = os.path.commonpath([os.path.abspath(f) for f in files])
    names = []
    for f, s in zip(files, stems):
        if counts[s] == 1:
            names.append(s)
            continue
        rel = os.path.splitext(os.path.relpath(os.path.abspath(f), common))[0]
        names.append(rel.replace(os.sep, "__"))
    return names
