"""Which ``.npy`` files a prediction run reads: paths and folders on the command line -> files."""
from __future__ import annotations

import os
from collections import Counter


def _npy_in(folder: str, recursive: bool) -> list[str]:
    if not recursive:
        return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                      if f.endswith(".npy") and os.path.isfile(os.path.join(folder, f)))
    found = []
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(here, f) for f in sorted(files) if f.endswith(".npy")]
    return found


def collect_inputs(paths: list[str], recursive: bool = False) -> list[str]:
    """The ``.npy`` files named by ``paths``, in order, each once.

    A file is taken as it is (it must end in ``.npy``); a folder gives its ``*.npy`` files sorted
    by name, and with ``recursive`` those of every sub-folder too (depth first, sorted). A data
    root is a folder whose images sit in ``images/``: give ``ROOT/images``. Raises
    ``FileNotFoundError`` naming a path that does not exist, ``ValueError`` naming a file that is
    not ``.npy`` or a folder without any ``.npy`` file (or no path at all).
    """
    if not paths:
        raise ValueError("no input given: name .npy files and/or folders holding them")
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = _npy_in(p, recursive)
            if not found:
                hint = ""
                if os.path.isdir(os.path.join(p, "images")):
                    hint = f" (a data root? give {os.path.join(p, 'images')}, or --recursive for every set)"
                elif not recursive and _npy_in(p, True):
                    hint = " (its sub-folders have some: use --recursive)"
                raise ValueError(f"{p}: folder holds no .npy image{hint}")
            files += found
        elif os.path.isfile(p):
            if not p.endswith(".npy"):
                raise ValueError(f"{p}: not a .npy image (expected an (H, W, C) uint8 .npy file)")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    seen: set[str] = set()
    unique = []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def output_names(files: list[str]) -> list[str]:
    """A distinct output name per file: its stem, or, where two files share a stem, the path
    relative to their common folder with ``/`` replaced by ``__`` (``day/a.npy`` -> ``day__a``)."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
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
