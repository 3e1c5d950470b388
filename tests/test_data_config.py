"""Data keys set through a config (``CADET.DATA.*``, ``CADET.INPUT.LAYOUT`` / ``FILE_CHANNELS``),
as a user sets them: ``register_from_config`` and the test mapper on tiny .npy roots."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from cadet_d2.data import DataError, MultiModalDatasetMapper
from conftest import make_tiny_root, registered_cfg, tiny_cfg, write_image, write_labels


@pytest.fixture
def root(tmp_path) -> str:
    return make_tiny_root(str(tmp_path / "data"), n=10, n_test=3)


def test_on_error_raise_then_skip(root, tmp_path, caplog):
    bad = os.path.join(root, "daytest1", "labels", "daytest10001.txt")
    write_labels(bad, ["0 0.5 0.5 0.2"])  # 4 fields
    cfg = registered_cfg(root, str(tmp_path / "o"))
    with pytest.raises(DataError, match=r"daytest10001\.txt:1: expected 5 fields"):
        DatasetCatalog.get("synth_daytest1")
    registered_cfg(root, str(tmp_path / "o"), "CADET.DATA.ON_ERROR", "skip")
    with caplog.at_level(logging.INFO, logger="cadet_d2"):
        dicts = DatasetCatalog.get("synth_daytest1")
    assert [d["stem"] for d in dicts] == ["daytest10000", "daytest10002"]
    assert "synth_daytest1: 2/3 images" in caplog.text and "bad files skipped 1" in caplog.text
    assert "skipped " + bad + ":1: expected 5 fields" in caplog.text
    assert cfg.CADET.DATA.ON_ERROR == "raise"
    with pytest.raises(ValueError, match=r"CADET.DATA.ON_ERROR = 'ignore' is not allowed"):
        tiny_cfg(root, str(tmp_path / "o"), "CADET.DATA.ON_ERROR", "ignore")


@pytest.mark.parametrize("policy,stems,empty", [
    ("skip", ["nighttest10000", "nighttest10002"], []),
    ("negative", ["nighttest10000", "nighttest10001", "nighttest10002"], ["nighttest10001"]),
])
def test_unlabeled_policy(root, tmp_path, policy, stems, empty):
    os.remove(os.path.join(root, "nighttest1", "labels", "nighttest10001.txt"))
    registered_cfg(root, str(tmp_path / "o"), "CADET.DATA.UNLABELED", policy)
    dicts = DatasetCatalog.get("synth_nighttest1")
    assert [d["stem"] for d in dicts] == stems
    assert [d["stem"] for d in dicts if not d["annotations"]] == empty


def test_classes_from_config_and_from_file(root, tmp_path):
    write_labels(os.path.join(root, "daytest1", "labels", "daytest10000.txt"), ["1 0.5 0.5 0.2 0.2"])
    registered_cfg(root, str(tmp_path / "o"), "CADET.DATA.CLASSES", "['car', 'person']",
                   "MODEL.ROI_HEADS.NUM_CLASSES", "2")
    assert MetadataCatalog.get("synth_daytest1").thing_classes == ["car", "person"]
    first = DatasetCatalog.get("synth_daytest1")[0]
    assert [a["category_id"] for a in first["annotations"]] == [1]
    # no CLASSES: classes.txt of the root; a class id outside the list is named with file and line
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("car\n\n")
    registered_cfg(root, str(tmp_path / "o"))
    assert MetadataCatalog.get("synth_daytest1").thing_classes == ["car"]
    with pytest.raises(DataError, match=r"daytest10000\.txt:1: .*class"):
        DatasetCatalog.get("synth_daytest1")


def test_empty_classes_file_is_an_error(root, tmp_path):
    path = os.path.join(root, "classes.txt")
    with open(path, "w") as f:
        f.write("\n  \n")
    with pytest.raises(DataError, match=f"^{path}: classes.txt is empty$"):
        registered_cfg(root, str(tmp_path / "o"))


def test_test_sets(root, tmp_path):
    from cadet_d2.data import register_from_config

    cfg = tiny_cfg(root, str(tmp_path / "o"), "CADET.DATA.NAME", "mine", "CADET.DATA.TEST_SETS", "['nighttest1']")
    assert register_from_config(cfg) == ["mine_train", "mine_test", "mine_nighttest1"]
    assert len(DatasetCatalog.get("mine_nighttest1")) == 3
    cfg = tiny_cfg(root, str(tmp_path / "o"), "CADET.DATA.NAME", "mine2", "CADET.DATA.TEST_SETS", "['fog']")
    with pytest.raises(FileNotFoundError, match=r"Test set 'fog' not found in .*data' \(CADET.DATA.TEST_SETS\): expected .*fog with pairs.csv or images/$"):
        register_from_config(cfg)


def _split(root: str, out: str, name: str, *opts: str) -> tuple[list[str], list[str]]:
    registered_cfg(root, out, "CADET.DATA.NAME", name, "CADET.DATA.TEST_SETS", "[]", *opts)
    return ([d["stem"] for d in DatasetCatalog.get(f"{name}_train")],
            [d["stem"] for d in DatasetCatalog.get(f"{name}_test")])


def test_test_fraction_and_split_seed(root, tmp_path):
    out = str(tmp_path / "o")
    stems = [f"img{i:04d}" for i in range(10)]
    train, test = _split(root, out, "a", "CADET.DATA.TEST_FRACTION", "0.3")
    assert len(test) == 3 and len(train) == 7 and sorted(train + test) == stems
    assert _split(root, out, "b", "CADET.DATA.TEST_FRACTION", "0.3") == (train, test)  # same seed, same split
    tests = {tuple(_split(root, out, f"s{seed}", "CADET.DATA.TEST_FRACTION", "0.3",
                          "CADET.DATA.SPLIT_SEED", str(seed))[1]) for seed in range(5)}
    assert len(tests) > 1  # the seed chooses the held-out images
    assert len(_split(root, out, "c", "CADET.DATA.TEST_FRACTION", "0.5")[1]) == 5
    with pytest.raises(ValueError, match=r"TEST_FRACTION = 1.0 must lie in \(0, 1\)"):
        tiny_cfg(root, out, "CADET.DATA.TEST_FRACTION", "1.0")


def test_layout_and_file_channels(tmp_path):
    """7-channel files, thermal in channel 0 and RGB in 4-6: the model input is [0, 4, 5, 6]."""
    root = str(tmp_path / "seven")
    image = np.random.default_rng(3).integers(0, 255, size=(48, 64, 7), dtype=np.uint8)
    write_image(os.path.join(root, "images", "a.npy"), image)
    write_labels(os.path.join(root, "labels", "a.txt"), ["0 0.5 0.5 0.2 0.2"])
    opts = ["CADET.INPUT.FILE_CHANNELS", "7", "CADET.INPUT.LAYOUT.rgb", "[4, 5, 6]",
            "CADET.INPUT.LAYOUT.thermal", "[0]", "CADET.INPUT.LAYOUT.event", "[2]",
            "CADET.INPUT.MODALITIES", "['thermal', 'rgb']", "MODEL.PIXEL_MEAN", "[0, 0, 0, 0]",
            "MODEL.PIXEL_STD", "[1, 1, 1, 1]", "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "64",
            "CADET.DATA.TEST_SETS", "[]"]
    cfg = registered_cfg(root, str(tmp_path / "o"), *opts)
    (d,) = DatasetCatalog.get("synth_train")  # one image: round(0.2 * 1) = 0 held out
    got = MultiModalDatasetMapper(cfg, is_train=False)(d)["image"].numpy()
    np.testing.assert_array_equal(got, image[:, :, [0, 4, 5, 6]].transpose(2, 0, 1).astype(np.float32))
    # a 5-channel file where the config says 7: named
    five = os.path.join(root, "images", "a.npy")
    write_image(five, image[:, :, :5])
    with pytest.raises(DataError, match=f"{five}: .*FILE_CHANNELS = 7"):
        MultiModalDatasetMapper(cfg, is_train=False)(d)
    with pytest.raises(ValueError, match=r"CADET.INPUT.LAYOUT.rgb = \[4, 5, 6\] has channels outside 0..4"):
        tiny_cfg(root, str(tmp_path / "o"), *opts[2:])
