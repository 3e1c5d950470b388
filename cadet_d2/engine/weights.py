"""Weights of a trained detector (``--eval-only``, inference, export): every parameter of the
model from the file, or an error.

Training loads ``MODEL.WEIGHTS`` leniently (Detectron2: keys that do not fit are logged and left
at their initial values, which fine-tuning from another model needs). A detector that is
evaluated, predicts or is exported with some of its weights random gives wrong numbers and boxes
without a sign, so there a file that does not fit the config's model exactly stops with
:class:`WeightsMismatchError`.
"""
from __future__ import annotations

import os

import torch

from ..utils.io import require_weights_file
from .checkpoint import CadetCheckpointer

SHOWN = 6  # keys listed per kind of mismatch


class WeightsMismatchError(ValueError):
    """A weights file whose keys or shapes differ from the model built from the config."""


def _some(keys: list[str]) -> str:
    more = f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def mismatch_message(path: str, missing: list[str], unexpected: list[str],
                     shapes: list[tuple[str, tuple, tuple]]) -> str:
    """What does not fit, by kind, with the first keys of each; empty when everything fits."""
    parts = []
    missing = [k for k in missing if k not in {k for k, _, _ in shapes}]  # fvcore lists those as missing too
    if missing:
        parts.append(f"{len(missing)} model keys not in the file ({_some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} file keys the model lacks ({_some(unexpected)})")
    if shapes:
        shown = [f"{k} file {tuple(a)} vs model {tuple(b)}" for k, a, b in shapes]
        parts.append(f"{len(shapes)} shapes differ ({_some(shown)})")
    if not parts:
        return ""
    run_cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    hint = (f"; the run that wrote it saved its config as {run_cfg}: use it as --config-file"
            if os.path.isfile(run_cfg) else "")
    return (f"MODEL.WEIGHTS {path} does not fit the model of this config (another backbone, fusion, "
            f"modalities or class count?): " + "; ".join(parts) + hint)


class ExactCheckpointer(CadetCheckpointer):
    """A :class:`CadetCheckpointer` whose ``load`` raises :class:`WeightsMismatchError` unless the
    file has every key of the model, no other key, and the model's shapes."""

    def _load_model(self, checkpoint: dict):  # fvcore's hook: load the state dict, report what did not fit
        incompatible = super()._load_model(checkpoint)
        message = mismatch_message(self.weights_path, list(incompatible.missing_keys),
                                   list(incompatible.unexpected_keys), list(incompatible.incorrect_shapes))
        if message:
            raise WeightsMismatchError(message)
        return incompatible

    def load(self, path: str, checkpointables=None) -> dict:
        self.weights_path = path
        return super().load(path, checkpointables=checkpointables)


def load_exact_weights(model: torch.nn.Module, path: str) -> None:
    """Load ``path`` into ``model`` (safely, see :mod:`cadet_d2.utils.safe_load`); a missing file
    raises ``FileNotFoundError``, a file that does not fit :class:`WeightsMismatchError`."""
    require_weights_file("MODEL.WEIGHTS", path, urls=True)
    ExactCheckpointer(model).load(path)
