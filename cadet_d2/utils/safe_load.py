"""Reading weights files without running code from them: the one weights-only loader.

* ``.pth``/``.bin`` files: ``torch.load(weights_only=True)`` on the CPU (:func:`load_torch_weights`);
* Detectron2/Caffe2 ``.pkl`` files: an unpickler that knows only numpy arrays and plain
  containers (:func:`load_pickle_arrays`).

A file that needs more stops with :class:`UnsafeCheckpointError`; a damaged file with
:class:`CorruptCheckpointError`, both naming the file. Used by checkpoints
(``engine/checkpoint.py``), pretrained MiT weights (``modeling/backbone/pretrained.py``) and
everything that loads a trained model.
"""
from __future__ import annotations

import errno
import pickle
import zipfile
from typing import Any

import torch


class UnsafeCheckpointError(RuntimeError):
    """A weights file holds pickled Python objects that cadet_d2 will not unpickle."""


class CorruptCheckpointError(RuntimeError):
    """A weights file cannot be read: truncated, damaged, or not a torch/pickle file at all."""


_PICKLE_ALLOWED = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only numpy arrays and plain containers)")


def load_pickle_arrays(path: str) -> Any:
    """Unpickle a Detectron2/Caffe2 ``.pkl`` weights file allowing numpy arrays and containers only."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if "is not allowed" not in str(e):
            raise CorruptCheckpointError(f"{path}: corrupt or truncated weights file ({e})") from None
        raise UnsafeCheckpointError(
            f"{path}: not loaded: the .pkl file holds Python objects other than numpy arrays ({e}); cadet_d2 "
            "never unpickles arbitrary objects, since that can run code from the file. If you trust the file, "
            "convert its weights to a .pth state dict of tensors."
        ) from None
    except EOFError:
        raise CorruptCheckpointError(f"{path}: corrupt or truncated weights file (ends too early)") from None


def _weights_only_reason(e: Exception) -> str:
    text = str(e)
    for marker in ("Unsupported global:", "WeightsUnpickler error:"):
        if marker in text:
            return text[text.index(marker):].split("\n")[0].strip()
    return text.strip().split("\n")[0][:300]


def load_torch_weights(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; :class:`UnsafeCheckpointError` for a file
    that holds Python objects, :class:`CorruptCheckpointError` for a damaged one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() and "weights_only" not in str(e).lower():
            raise CorruptCheckpointError(f"{path}: corrupt or truncated checkpoint ({_weights_only_reason(e)})") \
                from None
        raise UnsafeCheckpointError(
            f"{path}: not loaded: the file holds pickled Python objects beyond tensors and plain containers "
            f"({_weights_only_reason(e)}). cadet_d2 loads weights with torch.load(weights_only=True) so that a "
            "file cannot run code. If you trust the file, re-save only its weights, e.g.\n"
            "  python -c \"import torch; c = torch.load('IN', weights_only=False); "
            "torch.save({'model': c.get('model', c)}, 'OUT.pth')\""
        ) from None
    except (EOFError, KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise CorruptCheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})") from None
    except OSError as e:
        if e.errno not in (None, errno.EINVAL):  # e.g. permission denied: not the file's fault
            raise
        raise CorruptCheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})") from None
    except RuntimeError as e:
        text = str(e)
        if any(m in text for m in ("zip archive", "PytorchStreamReader", "inline_container", "storage")):
            raise CorruptCheckpointError(f"{path}: corrupt or truncated checkpoint ({text.splitlines()[0]})") \
                from None
        raise
