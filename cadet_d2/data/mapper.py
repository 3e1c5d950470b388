"""``MultiModalDatasetMapper``: a dataset dict -> the model's input for N-channel images."""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..layout import file_channel_indices, modality_slices
from .corrupt import Condition, ModalityDropout
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


class MultiModalDatasetMapper:
    """Load a ``.npy`` image, pick the configured channels, augment, and make Instances.

    Output dict: ``image`` float32 tensor (C, H, W) with C = channels of
    ``CADET.INPUT.MODALITIES`` (values 0-255, not normalised: the model subtracts
    ``MODEL.PIXEL_MEAN``), ``instances`` (training) with ``gt_boxes``/``gt_classes``.
    Geometric transforms move every channel and the boxes together; photometric ones touch
    the RGB channels only. Sensor failure (``corrupt.py``), before any transform: modality
    dropout in training (``CADET.INPUT.MODALITY_DROPOUT``), or a test ``condition`` (one
    :class:`Condition`; its frozen frame is the image ``frozen_file``).
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
        frozen_file: str | None = None,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.photometric = T.AugmentationList(photometric) if photometric else None
        self.channel_indices = list(channel_indices)
        self.file_channels = file_channels
        self.rgb_slice = rgb_slice
        self.dropout = dropout
        self.condition = condition
        self.frozen = None
        if condition is not None and condition.mode == "frozen":
            if frozen_file is None:
                raise ValueError(f"test condition {condition.name} needs frozen_file (the frozen frame)")
            self.frozen = self.load({"file_name": frozen_file})
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
        }

    def load(self, dataset_dict: dict) -> np.ndarray:
        """(H, W, C) float32 image of the configured channels."""
        image = load_image(dataset_dict["file_name"], self.file_channels)
        expected = (dataset_dict.get("height"), dataset_dict.get("width"))
        if None not in expected and image.shape[:2] != expected:
            from .errors import DataError
            raise DataError(dataset_dict["file_name"], f"image is {image.shape[:2]}, registered as {expected}")
        return select_channels(image, self.channel_indices)

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self.load(dataset_dict)
        if self.dropout is not None:
            image = self.dropout(image)
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
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        annos = [
            utils.transform_instance_annotations(obj, transforms, image_shape)
            for obj in dataset_dict.pop("annotations", [])
        ]
        instances = utils.annotations_to_instances(annos, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
