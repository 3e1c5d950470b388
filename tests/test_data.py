"""Data path: YOLO conversion, split determinism, registration counts, bad input, mapper."""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from cadet_d2.data import (
    DataError, MultiModalDatasetMapper, load_cadet_dicts, read_yolo_labels, register_cadet_dataset,
    split_stems, yolo_to_xyxy,
)
from conftest import tiny_cfg, write_image, write_labels


def test_yolo_to_xyxy_hand_computed():
    # 400x300 image, centre (0.5, 0.5), 0.25 x 0.5 -> x 150..250, y 75..225
    np.testing.assert_allclose(yolo_to_xyxy([0.5, 0.5, 0.25, 0.5], 400, 300), [150, 75, 250, 225])
    # box hanging over the right/bottom border is clipped to the image
    np.testing.assert_allclose(yolo_to_xyxy([0.95, 0.9, 0.2, 0.4], 100, 50), [85, 35, 100, 50])


def test_read_labels_uses_each_image_size_and_drops_degenerate(tmp_path):
    p = str(tmp_path / "a.txt")
    write_labels(p, ["0 0.5 0.5 0.5 0.5", "", "0 0.0 0.5 0.0 0.2", "1 0.25 0.75 0.1 0.1"])
    annos, dropped = read_yolo_labels(p, width=200, height=100, num_classes=2)
    assert dropped == 1
    assert [a["category_id"] for a in annos] == [0, 1]
    np.testing.assert_allclose(annos[0]["bbox"], [50, 25, 150, 75])
    np.testing.assert_allclose(annos[1]["bbox"], [40, 70, 60, 80])


@pytest.mark.parametrize("line, needle", [
    ("0 0.5 0.5 0.1", "expected 5 fields"),
    ("0 0.5 abc 0.1 0.1", "non-numeric"),
    ("0 0.5 0.5 1.5 0.1", "[0, 1]"),
    ("0 0.5 nan 0.1 0.1", "NaN"),
    ("3 0.5 0.5 0.1 0.1", "class id 3"),
    ("0.5 0.5 0.5 0.1 0.1", "class id"),
])
def test_bad_label_line_names_file_and_line(tmp_path, line, needle):
    p = str(tmp_path / "bad.txt")
    write_labels(p, ["0 0.5 0.5 0.1 0.1", line])
    with pytest.raises(DataError) as e:
        read_yolo_labels(p, 100, 100, num_classes=1)
    assert f"{p}:2" in str(e.value) and needle in str(e.value)


def test_split_is_deterministic_and_complete():
    stems = [f"s{i:03d}" for i in range(101)]
    train, test = split_stems(stems, 0.2, 42)
    assert len(test) == 20 and len(train) == 81
    assert sorted(train + test) == stems
    shuffled = list(reversed(stems))
    assert split_stems(shuffled, 0.2, 42) == (train, test)  # depends on the set, not the order
    assert split_stems(stems, 0.2, 43)[1] != test
    # pinned: the same split on every machine and numpy version
    assert test[:3] == ["s000", "s004", "s010"]  # numpy RandomState streams are frozen


def _bad_image(tmp_path, kind: str) -> str:
    p = str(tmp_path / f"{kind}.npy")
    if kind == "channels":
        write_image(p, np.zeros((8, 8, 3), np.uint8))
    elif kind == "dtype":
        write_image(p, np.zeros((8, 8, 5), np.float32))
    elif kind == "pickle":
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "truncated":
        write_image(p, np.zeros((32, 32, 5), np.uint8))
        with open(p, "r+b") as f:
            f.truncate(200)
    elif kind == "garbage":
        with open(p, "wb") as f:
            f.write(b"not a numpy file at all")
    elif kind == "empty":
        write_image(p, np.zeros((0, 8, 5), np.uint8))
    return p


@pytest.mark.parametrize("kind, needle", [
    ("channels", "expected (H, W, 5)"), ("dtype", "uint8"), ("pickle", "pickled"),
    ("truncated", "unreadable"), ("garbage", "unreadable"), ("empty", "zero-size"),
])
def test_bad_images_name_the_file(tmp_path, kind, needle):
    from cadet_d2.data import load_image, read_image_size

    p = _bad_image(tmp_path, kind)
    for fn in (load_image, read_image_size):
        with pytest.raises(DataError) as e:
            fn(p, 5)
        assert p in str(e.value) and needle in str(e.value)


def test_missing_image_file(tmp_path):
    from cadet_d2.data import load_image

    with pytest.raises(DataError, match="not found"):
        load_image(str(tmp_path / "nope.npy"), 5)


def test_registration_counts_unlabeled_and_policies(tiny_root):
    os.remove(os.path.join(tiny_root, "labels", "img0000.txt"))
    write_labels(os.path.join(tiny_root, "labels", "img0001.txt"), [])  # empty file: a true negative
    stems = sorted(f[:-4] for f in os.listdir(os.path.join(tiny_root, "images")))
    dicts, stats = load_cadet_dicts(tiny_root, stems, num_classes=1, unlabeled="skip")
    assert stats.unlabeled_skipped == 1 and len(dicts) == 9
    assert [d["stem"] for d in dicts if not d["annotations"]] == ["img0001"]
    dicts, stats = load_cadet_dicts(tiny_root, stems, num_classes=1, unlabeled="negative")
    assert stats.unlabeled_negative == 1 and len(dicts) == 10

    names = register_cadet_dataset("tinyreg", tiny_root, unlabeled="negative")
    assert names == ["tinyreg_train", "tinyreg_test", "tinyreg_daytest1", "tinyreg_nighttest1"]
    train, test = DatasetCatalog.get("tinyreg_train"), DatasetCatalog.get("tinyreg_test")
    assert len(train) == 8 and len(test) == 2
    assert not {d["stem"] for d in train} & {d["stem"] for d in test}
    assert len(DatasetCatalog.get("tinyreg_nighttest1")) == 3
    assert MetadataCatalog.get("tinyreg_train").thing_classes == ["object"]


def _age(root: str, seconds: float = 60) -> None:
    """Set the mtime of every file under ``root`` ``seconds`` back (older than memo.RACY_S)."""
    old = time.time() - seconds
    for folder, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(folder, f), (old, old))


def test_a_set_is_read_again_only_when_its_files_change(tiny_root, caplog):
    register_cadet_dataset("tinyonce", tiny_root)
    label = os.path.join(tiny_root, "daytest1", "labels", "daytest10001.txt")

    def reads() -> int:  # one log line per read of the set
        return sum("tinyonce_daytest1" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="cadet_d2.data.datasets"):
        DatasetCatalog.get("tinyonce_daytest1")
        DatasetCatalog.get("tinyonce_daytest1")
        assert reads() == 2  # files written just now: a read is not kept (racy mtimes)
        _age(tiny_root)
        first = DatasetCatalog.get("tinyonce_daytest1")
        first[0]["annotations"].clear()
        first.pop()
        second = DatasetCatalog.get("tinyonce_daytest1")
        assert reads() == 3 and len(second) == 3 and second[0]["annotations"]  # kept, and a copy
        with open(label) as f:
            line = f.read().strip()
        write_labels(label, ["1" + line[1:]])  # the same size: class 1 of a one-class set
        _age(tiny_root, 30)
        with pytest.raises(DataError, match=r"daytest10001\.txt:1"):  # the changed mtime is seen
            DatasetCatalog.get("tinyonce_daytest1")
        write_labels(label, [line])
        _age(tiny_root)
        assert len(DatasetCatalog.get("tinyonce_daytest1")) == 3 and reads() == 4
        os.remove(os.path.join(tiny_root, "daytest1", "labels", "daytest10000.txt"))
        assert len(DatasetCatalog.get("tinyonce_daytest1")) == 2 and reads() == 5  # the listing changed


def test_classes_txt_and_orphan_label(tiny_root):
    with open(os.path.join(tiny_root, "classes.txt"), "w") as f:
        f.write("person\ncar\n")
    register_cadet_dataset("tinycls", tiny_root)
    assert MetadataCatalog.get("tinycls_test").thing_classes == ["person", "car"]
    orphan = os.path.join(tiny_root, "labels", "ghost.txt")
    write_labels(orphan, ["0 0.5 0.5 0.1 0.1"])
    register_cadet_dataset("tinyorphan", tiny_root)
    with pytest.raises(DataError, match="label file without an image") as e:
        DatasetCatalog.get("tinyorphan_train")
    assert orphan in str(e.value)


def test_on_error_skip_counts_bad_files(tiny_root):
    write_image(os.path.join(tiny_root, "images", "img0002.npy"), np.zeros((8, 8, 4), np.uint8))
    write_labels(os.path.join(tiny_root, "labels", "img0003.txt"), ["0 0.5 0.5 0.1"])
    stems = sorted(f[:-4] for f in os.listdir(os.path.join(tiny_root, "images")))
    with pytest.raises(DataError, match="img0002"):
        load_cadet_dicts(tiny_root, stems, num_classes=1)
    dicts, stats = load_cadet_dicts(tiny_root, stems, num_classes=1, on_error="skip")
    assert len(dicts) == 8 and len(stats.errors) == 2
    assert any("img0003.txt:1" in m for m in stats.errors)


def _dict_for(root: str, stem: str) -> dict:
    dicts, _ = load_cadet_dicts(root, [stem], num_classes=1)
    return dicts[0]


def test_mapper_selects_channels_in_modality_order(tiny_root, tmp_path):
    d = _dict_for(tiny_root, "img0000")
    raw = np.load(d["file_name"])
    cfg = tiny_cfg(tiny_root, str(tmp_path), "CADET.INPUT.MODALITIES", "['event', 'rgb']",
                   "MODEL.PIXEL_MEAN", "[0,0,0,0]", "MODEL.PIXEL_STD", "[1,1,1,1]",
                   "INPUT.MIN_SIZE_TEST", "0")  # 0 = no resize
    out = MultiModalDatasetMapper(cfg, is_train=False)(d)
    img = out["image"].numpy()
    assert img.shape == (4, 48, 64) and out["image"].dtype == torch.float32
    np.testing.assert_array_equal(img[0], raw[:, :, 4])
    np.testing.assert_array_equal(img[1:], raw[:, :, :3].transpose(2, 0, 1))
    assert "instances" not in out and "annotations" not in out


def test_mapper_flip_moves_all_channels_and_boxes(tiny_root, tmp_path):
    d = _dict_for(tiny_root, "img0000")
    raw = np.load(d["file_name"]).astype(np.float32)
    base = ["INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "1000"]
    flipped = MultiModalDatasetMapper(tiny_cfg(tiny_root, str(tmp_path), *base, "INPUT.RANDOM_FLIP", "horizontal"), True)
    flipped.augmentations.augs[-1].prob = 1.0  # always flip
    out = flipped(d)
    img = out["image"].numpy()
    np.testing.assert_array_equal(img, raw[:, ::-1, :].transpose(2, 0, 1))
    x0, y0, x1, y1 = d["annotations"][0]["bbox"]
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor[0].numpy(), [64 - x1, y0, 64 - x0, y1], atol=1e-4)
    # the warm (thermal = 230) block must sit inside the flipped box
    bx0, by0, bx1, by1 = [int(round(v)) for v in out["instances"].gt_boxes.tensor[0].tolist()]
    assert (img[3, by0:by1, bx0:bx1] == 230).all()


def test_mapper_resize_scales_boxes_and_photometric_touches_rgb_only(tiny_root, tmp_path):
    d = _dict_for(tiny_root, "img0000")
    cfg = tiny_cfg(tiny_root, str(tmp_path), "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "1000",
                   "INPUT.RANDOM_FLIP", "none", "CADET.INPUT.BRIGHTNESS", "0.5")
    mapper = MultiModalDatasetMapper(cfg, True)
    plain = MultiModalDatasetMapper(tiny_cfg(tiny_root, str(tmp_path), "INPUT.MIN_SIZE_TRAIN", "(96,)",
                                             "INPUT.MAX_SIZE_TRAIN", "1000", "INPUT.RANDOM_FLIP", "none"), True)
    np.random.seed(0)
    out, ref = mapper(d), plain(d)
    assert out["image"].shape == (5, 96, 128)
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor[0].numpy(), np.array(d["annotations"][0]["bbox"]) * 2,
                               atol=1e-3)
    assert torch.equal(out["image"][3:], ref["image"][3:])  # thermal/event untouched
    assert not torch.equal(out["image"][:3], ref["image"][:3])  # RGB jittered


def test_mapper_rejects_bad_file_at_load(tiny_root, tmp_path):
    d = _dict_for(tiny_root, "img0000")
    write_image(d["file_name"], np.zeros((48, 64, 3), np.uint8))
    mapper = MultiModalDatasetMapper(tiny_cfg(tiny_root, str(tmp_path)), False)
    with pytest.raises(DataError, match="img0000.npy"):
        mapper(d)
