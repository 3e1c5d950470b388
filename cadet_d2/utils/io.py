"""Atomic file writing: a reader never sees a half-written file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any, Callable


def _file_mode() -> int:
    """0o666 minus the process umask: the mode ``open()`` would give a new file (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened/fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary binary file beside ``path``, fsync it, rename it over
    ``path`` and fsync the folder.

    On any error (or a kill) ``path`` keeps its previous content; the temporary file is removed
    on errors (a kill leaves a hidden ``.<name>.*.tmp`` file). The file gets the permissions a
    plain ``open()`` would give.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def require_weights_file(key: str, path: str, urls: bool = False) -> None:
    """Stop unless ``path`` (the value of config key ``key``) is a local file, or a URL when the
    key's loader fetches them (``urls``: ``MODEL.WEIGHTS``): ``IsADirectoryError`` for a folder
    (naming its ``model_final.pth``), ``FileNotFoundError`` for nothing there."""
    if urls and "://" in path:
        return
    if os.path.isdir(path):
        raise IsADirectoryError(f"{key} {path} is a folder: name the weights file, e.g. "
                                f"{os.path.join(path, 'model_final.pth')}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key} {path}: no such file")
