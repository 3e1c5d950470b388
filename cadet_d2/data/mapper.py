"""``MultiModalDatasetMapper``: a dataset dict -> the model's input for N-channel images."""
from __future__ import annotations

import copy
import logging

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..layout import DEFAULT_GREY_TOLERANCE, PAIR_CHANNELS, file_channel_indices, modality_slices
from .corrupt import Condition, ModalityDropout
from .errors import DataError
from .event_frames import read_event_file
from .images import read_grey, read_rgb, reduced_shape, reduction_factor
from .npy import load_image, select_channels

logger = logging.getLogger(__name__)


def build_photometric_augmentations(cfg, is_train: bool) -> list[T.Augmentation]:
    """Brightness/contrast/saturation jitter applied to the RGB channels only (training)."""
    if not is_train:
        return []
    c, augs = cfg.CADET.INPUT, []
    if c.BRIGHTNESS > 0:
        augs.append(T.RandomBrightness(1 - c.BRIGHTNESS, 1 + c.BRIGHTNESS))
    if c.CONTRAST > 0:
        augs.append(T.RandomContrast(1 - c.CONTRAST, 1 + c.CONTRAST))
    if c.SATURATION > 0:
        augs.append(T.RandomSaturation(1 - c.SATURATION, 1 + c.SATURATION))
    return augs


def resize_target(cfg, is_train: bool) -> tuple[int, int]:
    """(largest shorter side, longer-side cap) the mapper's ResizeShortestEdge may resize to."""
    if is_train:
        return max(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN
    return cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST


class MultiModalDatasetMapper:
    """Load a ``.npy`` image or paired image files, augment, and make Instances.

    Output dict: ``image`` float32 tensor (C, H, W) with C = channels of
    ``CADET.INPUT.MODALITIES`` (values 0-255, not normalised: the model subtracts
    ``MODEL.PIXEL_MEAN``), ``instances`` (training) with ``gt_boxes``/``gt_classes``.
    Geometric transforms move every channel and the boxes together; photometric ones touch
    the RGB channels only. Sensor failure (``corrupt.py``), before any transform: modality
    dropout in training (``CADET.INPUT.MODALITY_DROPOUT``), or a test ``condition`` (one
    :class:`Condition`; its frozen frame is ``frozen_file``: a ``.npy`` path or a dataset dict).

    Paired files (a dict with ``pair`` {modality: file}): each modality of
    ``CADET.INPUT.MODALITIES`` is decoded (:mod:`cadet_d2.data.images`: rgb 3 channels, thermal
    and event 1, near-grey files by ``CADET.INPUT.GREY_TOLERANCE``, colour thermal through
    ``CADET.INPUT.THERMAL_PALETTE``) and stacked in that order, as ``.npy`` channels are; a partner of another size
    than the RGB image is resized to it. With ``reduced_decode``, JPEG pairs are decoded at
    1/2, 1/4 or 1/8 size when the resize target allows it (:func:`reduction_factor`), and the
    boxes are scaled by the decoded size; ``height``/``width`` stay the original ones.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        photometric: list,
        channel_indices: list[int],
        file_channels: int,
        rgb_slice: slice | None,
        dropout: ModalityDropout | None = None,
        condition: Condition | None = None,
        frozen_file: str | dict | None = None,
        modalities: tuple[str, ...] = ("rgb", "thermal", "event"),
        pair_channels: tuple[int, ...] = (3, 1, 1),
        resize_target: tuple[int, int] = (0, 0),
        reduced_decode: bool = False,
        thermal_percentiles: tuple[float, float] = (1.0, 99.0),
        thermal_range: tuple[float, ...] = (),
        grey_tolerance: int = DEFAULT_GREY_TOLERANCE,
        thermal_palette: str = "",
        event_channels: int = 1,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.photometric = T.AugmentationList(photometric) if photometric else None
        self.channel_indices = list(channel_indices)
        self.file_channels = file_channels
        self.rgb_slice = rgb_slice
        self.dropout = dropout
        self.condition = condition
        self.modalities = tuple(modalities)
        self.pair_channels = tuple(pair_channels)
        self.resize_target = tuple(resize_target)
        self.reduced_decode = reduced_decode
        self.thermal_percentiles = tuple(thermal_percentiles)
        self.thermal_range = tuple(thermal_range)
        self.grey_tolerance, self.thermal_palette = grey_tolerance, thermal_palette
        self.event_channels = int(event_channels)
        self.frozen = None
        if condition is not None and condition.mode == "frozen":
            if frozen_file is None:
                raise ValueError(f"test condition {condition.name} needs frozen_file (the frozen frame)")
            frozen = frozen_file if isinstance(frozen_file, dict) else {"file_name": frozen_file}
            self.frozen = self.load(frozen)
        logger.info(f"[cadet] mapper ({'train' if is_train else 'test'}): channels {self.channel_indices}, "
                    f"geometric {augmentations}, photometric (RGB only) {photometric}"
                    + (f", {dropout}" if dropout else "") + (f", condition {condition.name}" if condition else ""))

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, condition: Condition | None = None,
                    frozen_file: str | None = None) -> dict:
        slices = modality_slices(cfg)
        return {
            "is_train": is_train,
            # resize (scale jitter from INPUT.MIN_SIZE_TRAIN) and flip, as Detectron2 does
            "augmentations": utils.build_augmentation(cfg, is_train),
            "photometric": build_photometric_augmentations(cfg, is_train) if "rgb" in slices else [],
            "channel_indices": file_channel_indices(cfg),
            "file_channels": cfg.CADET.INPUT.FILE_CHANNELS,
            "rgb_slice": slices.get("rgb"),
            "dropout": ModalityDropout.from_config(cfg) if is_train else None,
            "condition": condition,
            "frozen_file": frozen_file,
            "modalities": tuple(cfg.CADET.INPUT.MODALITIES),
            "pair_channels": tuple(len(cfg.CADET.INPUT.LAYOUT[m]) for m in cfg.CADET.INPUT.MODALITIES),
            "resize_target": resize_target(cfg, is_train),
            "reduced_decode": cfg.CADET.INPUT.REDUCED_DECODE,
            "thermal_percentiles": tuple(cfg.CADET.INPUT.THERMAL_PERCENTILES),
            "thermal_range": tuple(cfg.CADET.INPUT.THERMAL_RANGE),
            "grey_tolerance": cfg.CADET.INPUT.GREY_TOLERANCE,
            "thermal_palette": cfg.CADET.INPUT.THERMAL_PALETTE,
            "event_channels": cfg.CADET.INPUT.EVENT_CHANNELS,
        }

    def load(self, dataset_dict: dict) -> np.ndarray:
        """(H, W, C) float32 image of the configured channels (at the decoded size)."""
        return self.load_decoded(dataset_dict)[0]

    def load_original(self, dataset_dict: dict) -> np.ndarray:
        """(H, W, C) float32 image of the configured channels at the registered size (a pair is
        decoded at full size whatever REDUCED_DECODE says): for pictures of ground truth and
        predictions."""
        if "pair" in dataset_dict:
            return self.load_pair(dataset_dict, 1)
        return self.load_decoded(dataset_dict)[0]

    def decode_factor(self, dataset_dict: dict) -> int:
        """1, or 2/4/8 when every configured file of a pair is a JPEG and the resize allows it."""
        pair = dataset_dict.get("pair")
        if not (self.reduced_decode and pair) or "height" not in dataset_dict:
            return 1
        if not all(pair[m].lower().endswith((".jpg", ".jpeg")) for m in self.modalities):
            return 1
        return reduction_factor(dataset_dict["height"], dataset_dict["width"], *self.resize_target)

    def load_decoded(self, dataset_dict: dict) -> tuple[np.ndarray, int]:
        """((h, w, C) float32 image, decode factor): h, w = height, width / factor (rounded up)."""
        if "pair" not in dataset_dict:
            image = load_image(dataset_dict["file_name"], self.file_channels)
            expected = (dataset_dict.get("height"), dataset_dict.get("width"))
            if None not in expected and image.shape[:2] != expected:
                raise DataError(dataset_dict["file_name"], f"image is {image.shape[:2]}, registered as {expected}")
            return select_channels(image, self.channel_indices), 1
        factor = self.decode_factor(dataset_dict)
        return self.load_pair(dataset_dict, factor), factor

    def load_pair(self, dataset_dict: dict, factor: int) -> np.ndarray:
        """(h, w, C) float32 stack of the configured modalities' files, RGB size / ``factor``."""
        pair = dataset_dict["pair"]
        size = reduced_shape(dataset_dict["height"], dataset_dict["width"], factor)
        parts = []
        for m, n in zip(self.modalities, self.pair_channels):
            if m not in pair:
                raise DataError(dataset_dict["file_name"], f"this pair has no {m} file (CADET.INPUT.MODALITIES "
                                                           f"has {m}; the pair has {sorted(pair)})")
            expected = self.event_channels if m == "event" else PAIR_CHANNELS[m]
            if n != expected:
                raise ValueError(f"CADET.INPUT.LAYOUT.{m} has {n} channels; a paired {m} file gives "
                                 f"{expected} (keep the default LAYOUT with paired files"
                                 + (", or one channel per CADET.INPUT.EVENT_CHANNELS)" if m == "event" else ")"))
            if m == "rgb":
                part = read_rgb(pair[m], factor)
                if part.shape[:2] != size:
                    raise DataError(pair[m], f"image is {part.shape[:2]} at 1/{factor} size, registered as "
                                             f"{(dataset_dict['height'], dataset_dict['width'])} at full size")
            else:
                if m == "event":  # a grey image, or an (H, W, EVENT_CHANNELS) .npy event frame
                    part = read_event_file(pair[m], n, factor, self.thermal_percentiles, self.thermal_range,
                                           self.grey_tolerance)
                else:
                    part = read_grey(pair[m], factor, self.thermal_percentiles, self.thermal_range,
                                     self.grey_tolerance, self.thermal_palette)[:, :, None]
                if part.shape[:2] != size:  # CADET.INPUT.SIZE_MISMATCH "error" stopped at registration
                    part = cv2.resize(part, (size[1], size[0]), interpolation=cv2.INTER_LINEAR).reshape(
                        size[0], size[1], part.shape[2])
            parts.append(part)
        image = np.empty((size[0], size[1], sum(p.shape[2] for p in parts)), dtype=np.float32)
        start = 0
        for p in parts:
            image[:, :, start:start + p.shape[2]] = p
            start += p.shape[2]
        return image

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image, factor = self.load_decoded(dataset_dict)
        if self.dropout is not None:
            image, dropped = self.dropout(image)
            if dropped:
                dataset_dict["dropped_channels"] = dropped
        if self.condition is not None:
            image = self.condition.apply(image, dataset_dict["file_name"], self.frozen)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        if self.photometric is not None and self.rgb_slice is not None:
            rgb = T.AugInput(np.ascontiguousarray(image[:, :, self.rgb_slice]))
            self.photometric(rgb)
            image = image.copy()
            image[:, :, self.rgb_slice] = np.clip(rgb.image, 0, 255)
        image_shape = image.shape[:2]
        if factor > 1:  # boxes are in original pixels: first scale them to the decoded image
            h, w = dataset_dict["height"], dataset_dict["width"]
            decoded = reduced_shape(h, w, factor)
            transforms = T.TransformList([T.ScaleTransform(h, w, decoded[0], decoded[1])] + transforms.transforms)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        annos = [
            utils.transform_instance_annotations(obj, transforms, image_shape)
            for obj in dataset_dict.pop("annotations", [])
            if obj.get("iscrowd", 0) == 0  # ignore regions: evaluation only, as Detectron2's DatasetMapper
        ]
        instances = utils.annotations_to_instances(annos, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
