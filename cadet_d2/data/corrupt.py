"""Sensor failure: modalities zeroed, replaced by noise, or frozen, in training and at test time.

A *group* names one or more modalities of ``CADET.INPUT.MODALITIES`` joined by ``+``
(``"rgb"``, ``"thermal+event"``); it fails as a whole. Modes:

* ``zero``: the group's channels are 0 (a dead sensor; raw pixel 0, before normalisation);
* ``noise``: uniform integer noise in [0, 255] (a broken link);
* ``frozen``: the channels of a fixed frame (a stuck sensor), resized to the image's size.

Training (``CADET.INPUT.MODALITY_DROPOUT``): with probability ``PROB`` a sample loses one of
``GROUPS`` (drawn uniformly) in mode ``MODE`` (zero or noise), drawn from numpy's global RNG,
which the deterministic training stream seeds per sample. Test (``CADET.TEST.DROP_MODALITIES``
x ``CADET.TEST.CORRUPT``): every image of a condition loses the same group; noise is seeded
by the file name, and the frozen frame is the first image of the data set being evaluated.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..layout import TEST_MODES, group_channels, modality_slices



def corrupt(image: np.ndarray, channels: list[int], mode: str, rng,
            frozen: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of ``image`` (H, W, C) float32 with ``channels`` zeroed, noised or frozen.

    ``rng``: source of the noise (anything with numpy's ``randint``); ``frozen``: (H', W', C) frame of the same channels (mode frozen).
    """
    out = image.copy()
    h, w = image.shape[:2]
    if mode == "zero":
        out[:, :, channels] = 0
    elif mode == "noise":
        out[:, :, channels] = rng.randint(0, 256, size=(h, w, len(channels))).astype(out.dtype)
    elif mode == "frozen":
        if frozen is None:
            raise ValueError("corrupt: mode 'frozen' needs a frozen frame")
        frame = frozen[:, :, channels]
        if frame.shape[:2] != (h, w):
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, len(channels))
        out[:, :, channels] = frame
    else:
        raise ValueError(f"corrupt: unknown mode {mode!r}; choose from {list(TEST_MODES)}")
    return out


@dataclass(frozen=True)
class Condition:
    """A test-time sensor failure: ``group`` (e.g. ``thermal+event``) in ``mode``."""

    group: str
    mode: str
    channels: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"-{self.group} ({self.mode})"

    def apply(self, image: np.ndarray, file_name: str, frozen: Optional[np.ndarray]) -> np.ndarray:
        """(H, W, C) -> the corrupted copy; the noise is a function of ``file_name``."""
        rng = np.random.RandomState(zlib.crc32(file_name.encode("utf-8")))
        return corrupt(image, list(self.channels), self.mode, rng, frozen)


def conditions_from_config(cfg) -> list[Condition]:
    """The conditions of ``CADET.TEST.DROP_MODALITIES`` x ``CADET.TEST.CORRUPT`` (group-major)."""
    slices = modality_slices(cfg)
    return [Condition(g, m, tuple(group_channels(g, slices, "CADET.TEST.DROP_MODALITIES")))
            for g in cfg.CADET.TEST.DROP_MODALITIES for m in cfg.CADET.TEST.CORRUPT]


class ModalityDropout:
    """Training: with probability ``prob`` zero or noise one of ``groups`` (channel lists)."""

    def __init__(self, prob: float, groups: list[list[int]], mode: str) -> None:
        self.prob, self.groups, self.mode = prob, groups, mode

    @classmethod
    def from_config(cls, cfg) -> Optional["ModalityDropout"]:
        opt = cfg.CADET.INPUT.MODALITY_DROPOUT
        if opt.PROB <= 0:
            return None
        slices = modality_slices(cfg)
        groups = [group_channels(g, slices, "CADET.INPUT.MODALITY_DROPOUT.GROUPS") for g in opt.GROUPS]
        return cls(opt.PROB, groups, opt.MODE)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """(H, W, C) -> (the image, []) or (a copy with one group dropped, that group's channels);
        draws from numpy's global RNG."""
        if np.random.rand() >= self.prob:
            return image, []
        channels = self.groups[np.random.randint(len(self.groups))]
        return corrupt(image, channels, self.mode, np.random), list(channels)  # the module's randint: global RNG

    def __repr__(self) -> str:
        return f"ModalityDropout(prob={self.prob}, groups={self.groups}, mode={self.mode!r})"
