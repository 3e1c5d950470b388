"""The KAIST devkit's nine miss-rate settings on boxes made by hand, the bbGt copies as ground
truth, and results files (KAIST text, per-frame files, COCO JSON), good and malformed."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from cadet_d2.data.errors import DataError
from cadet_d2.evaluation.miss_rate import evaluate_settings
from cadet_d2.evaluation.miss_rate_gt import (SETTINGS, frames_of, ignore_flags, objects_from_annotations,
                                              objects_from_bbgt)
from cadet_d2.evaluation.results_files import read_results

W, H = 640, 512
# One 640 x 512 frame, bbGt objects (label, left, top, width, height, occlusion, ign):
OBJECTS = [
    ("person", 100, 100, 40, 120, 0, 0),  # P1 h 120: near (not medium: > 115), reasonable, occ-none
    ("person", 150, 100, 30, 80, 0, 0),  # P2 h 80: medium, reasonable, occ-none
    ("person", 200, 100, 12, 30, 0, 0),  # P3 h 30: far, occ-none
    ("person", 250, 100, 30, 80, 1, 0),  # P4 partial: reasonable, occ-partial
    ("person", 300, 100, 30, 80, 2, 0),  # P5 heavy: occ-heavy only
    ("person", 2, 100, 30, 80, 0, 0),  # P6 left edge at 2 < 5: ignored everywhere but "all"
    ("person", 350, 100, 20, 55, 0, 0),  # P7 h 55 (limits are inclusive): reasonable, medium, occ-none
    ("person", 400, 100, 16, 45, 0, 0),  # P8 h 45: medium and far, occ-none
    ("person", 450, 100, 40, 115, 0, 0),  # P9 h 115: near and medium, reasonable, occ-none
    ("person", 500, 100, 30, 80, 0, 1),  # P10 ign flag 1: ignored everywhere
    ("people", 550, 100, 40, 80, 0, 0),  # an ignore label
    ("person", 600, 387, 30, 120, 0, 0),  # P11 bottom at 507 = 512 - 5: inside; near, reasonable, occ-none
    ("dog", 10, 10, 5, 5, 0, 0),  # another label: left out
]
# The regular (not ignored) persons of each setting.
REGULAR = {
    "reasonable": {"P1", "P2", "P4", "P7", "P9", "P11"},
    "near": {"P1", "P9", "P11"},
    "medium": {"P2", "P7", "P8", "P9"},
    "far": {"P3", "P8"},
    "occ-none": {"P1", "P2", "P3", "P7", "P8", "P9", "P11"},
    "occ-partial": {"P4"},
    "occ-heavy": {"P5"},
    "all": {"P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P11"},
}
NAMES = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "people", "P11"]  # objects kept, in order
FOUND = {"P2", "P3", "P4", "P9"}  # detected exactly, no false positive


def write_bbgt(path, objects) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("% bbGt version=3\n")
        for label, x, y, w, h, occ, ign in objects:
            f.write(f"{label} {x} {y} {w} {h} {occ} 0 0 0 0 {ign} 0\n")
    return str(path)


@pytest.fixture
def frame(tmp_path) -> str:
    return write_bbgt(tmp_path / "set06_V000_I00019.txt", OBJECTS)


@pytest.mark.parametrize("setting", sorted(REGULAR))
def test_ignore_regions_of_each_setting(frame, setting):
    obj = objects_from_bbgt(frame, "person", (W, H))
    assert len(obj.boxes) == len(NAMES)  # the dog is left out
    regular = {n for n, ign in zip(NAMES, ignore_flags(obj, SETTINGS[setting])) if not ign}
    assert regular == REGULAR[setting]


@pytest.mark.parametrize("setting", sorted(REGULAR))
def test_miss_rate_of_each_setting(frame, tmp_path, setting):
    """One frame, the persons of FOUND detected exactly: no false positive, so the miss rate is
    1 - found / regular at every reference point (0 stands for 1e-10 in the log)."""
    boxes = np.array([[x, y, x + w, y + h] for n, (_, x, y, w, h, _, _) in zip(NAMES, OBJECTS) if n in FOUND],
                     dtype=np.float64)
    record = {"image_id": 0, "stem": "set06_V000_I00019", "width": W, "height": H}
    res = evaluate_settings([record], {0: (boxes, np.linspace(0.9, 0.6, len(boxes)))}, 0, "person",
                            (SETTINGS[setting],), bbgt_dir=str(tmp_path))[setting]
    want = 1 - len(FOUND & REGULAR[setting]) / len(REGULAR[setting])
    assert res.num_pos == len(REGULAR[setting])
    assert res.mr == pytest.approx(max(want, 1e-10))
    np.testing.assert_allclose(res.at_ref, want)


def test_dataset_dicts_give_the_same_regions_as_bbgt(frame):
    """The same frame as dataset-dict annotations (iscrowd for the ignore label and the ign flag)."""
    from detectron2.structures import BoxMode
    annotations = [{"bbox": [x, y, x + w, y + h], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0,
                    "iscrowd": int(label != "person" or ign), "occlusion": occ}
                   for label, x, y, w, h, occ, ign in OBJECTS if label != "dog"]
    a = objects_from_annotations(annotations, 0, (W, H))
    b = objects_from_bbgt(frame, "person", (W, H))
    np.testing.assert_allclose(a.boxes, b.boxes)
    for s in SETTINGS.values():
        np.testing.assert_array_equal(ignore_flags(a, s), ignore_flags(b, s))


def test_day_and_night_settings_cover_their_frames():
    stems = ["set06_V000_I00019", "set08_V001_I00039", "set09_V000_I00019", "set11_V000_I00039"]
    assert frames_of(SETTINGS["reasonable-day"], stems).tolist() == [True, True, False, False]
    assert frames_of(SETTINGS["reasonable-night"], stems).tolist() == [False, False, True, True]
    assert frames_of(SETTINGS["reasonable"], stems).all()
    assert frames_of(SETTINGS["reasonable-day"], stems[:2]) is None  # a day-only set: left out
    assert frames_of(SETTINGS["reasonable-night"], ["a", "b"]) is None  # not KAIST frames


def test_day_setting_counts_only_day_frames_in_fppi(tmp_path):
    """A day and a night frame, one person each, found; a false positive in the night frame: the
    day setting has no false positive (MR 0), the reasonable setting half an fppi (MR > 0)."""
    person = [("person", 100, 100, 30, 80, 0, 0)]
    stems = ["set06_V000_I00019", "set09_V000_I00019"]
    for s in stems:
        write_bbgt(tmp_path / f"{s}.txt", person)
    records = [{"image_id": i, "stem": s, "width": W, "height": H} for i, s in enumerate(stems)]
    hit = [100, 100, 130, 180]
    preds = {0: (np.array([hit], dtype=np.float64), np.array([0.5])),
             1: (np.array([hit, [300, 100, 330, 180]], dtype=np.float64), np.array([0.5, 0.9]))}
    res = evaluate_settings(records, preds, 0, "person", (SETTINGS["reasonable"], SETTINGS["reasonable-day"],
                                                          SETTINGS["reasonable-night"]), bbgt_dir=str(tmp_path))
    assert res["reasonable-day"].mr == pytest.approx(1e-10) and res["reasonable-day"].num_images == 1
    # reasonable: fp first (fppi 1/2, miss 1), then both found: miss 1 at the 7 points below 0.5
    assert res["reasonable"].mr == pytest.approx(math.exp((7 * math.log(1.0) + 2 * math.log(1e-10)) / 9))
    night = res["reasonable-night"]
    assert night.num_images == 1 and night.at_ref[-1] == pytest.approx(0.0, abs=1e-12)


# ---- results files ---------------------------------------------------------------------------------

RECORDS = [{"image_id": i, "stem": s, "width": W, "height": H, "file_name": s}
           for i, s in enumerate(["set06_V000_I00019", "set06_V000_I00039", "set09_V000_I00019"])]


def write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_kaist_text_frames_are_1_based_in_stem_order(tmp_path):
    path = write(tmp_path / "r.txt", "1,10,20,30,40,0.9\n3,1.5,2.5,3,4,0.25\n\n")
    preds = read_results(path, RECORDS, "person", 1)
    np.testing.assert_allclose(preds[0][0], [[10, 20, 40, 60]])
    assert preds[1][0].shape == (0, 4)
    np.testing.assert_allclose(preds[2][0], [[1.5, 2.5, 4.5, 6.5]])
    np.testing.assert_allclose(preds[2][1], [0.25])


def test_per_frame_files_get_the_devkit_plus_one_and_rounding(tmp_path):
    folder = tmp_path / "det"
    folder.mkdir()
    write(folder / "set06_V000_I00039.txt", "person 10 20 40 60 0.9\nperson 1.00004 2.123456 3.5 4.25 0.123456789\n")
    preds = read_results(str(folder), RECORDS, "person", 1)
    np.testing.assert_allclose(preds[1][0], [[11, 21, 41, 61], [2.0, 3.1235, 2.0 + 2.5, 3.1235 + 2.1265]])
    np.testing.assert_allclose(preds[1][1], [0.9, 0.12345679])
    assert preds[0][0].shape == (0, 4) and preds[2][0].shape == (0, 4)


def test_coco_results_keep_the_evaluated_category(tmp_path):
    path = write(tmp_path / "r.json", json.dumps([
        {"image_id": 2, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.5},
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.9}]))
    preds = read_results(path, RECORDS, "person", 1)
    np.testing.assert_allclose(preds[2][0], [[10, 20, 40, 60]])


@pytest.mark.parametrize("name, text, needle", [
    ("r.txt", "1,10,20,30,40,0.9\n4,10,20,30,40,0.9\n", r"r.txt:2: frame 4 is not one of the set's frames 1..3"),
    ("r.txt", "0,10,20,30,40,0.9\n", r"r.txt:1: frame 0 is not one"),
    ("r.txt", "1,10,20,30,40\n", r"r.txt:1: expected 'frame, x, y, w, h, score'"),
    ("r.txt", "1,10,20,abc,40,0.9\n", r"r.txt:1: non-numeric field"),
    ("r.txt", "1,10,20,30,nan,0.9\n", r"r.txt:1: NaN or infinite"),
    ("r.txt", "1.5,10,20,30,40,0.9\n", r"r.txt:1: frame 1.5 is not one"),
    ("r.txt", "1,10,20,-30,40,0.9\n", r"r.txt:1: negative width"),
    ("r.json", '[{"image_id": 7, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]',
     r"r.json:0: entry 0: image_id 7"),
    ("r.json", '[{"image_id": 0, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}]', r"r.json:0: entry 0 is not"),
    ("r.json", '{"image_id": 0}', r"r.json: a COCO results file is a JSON list"),
    ("r.json", '[{"image_id": 0,', r"r.json: not a readable JSON file"),
])
def test_malformed_results_files_name_file_and_line(tmp_path, name, text, needle):
    path = write(tmp_path / name, text)
    with pytest.raises(DataError, match=needle):
        read_results(path, RECORDS, "person", 1)


@pytest.mark.parametrize("stem, text, needle", [
    ("set07_V000_I00019", "person 1 2 3 4 0.5\n",
     r"set07_V000_I00019.txt: frame 'set07_V000_I00019' is not in the set"),
    ("set06_V000_I00019", "person 1 2 3 4\n", r"set06_V000_I00019.txt:1: expected 'person x1 y1 x2 y2 score'"),
    ("set06_V000_I00019", "\ncyclist 1 2 3 4 0.5\n", r"set06_V000_I00019.txt:2: label 'cyclist' is not the evaluated"),
    ("set06_V000_I00019", "person 5 2 3 4 0.5\n", r"set06_V000_I00019.txt:1: x2 < x1"),
])
def test_malformed_per_frame_files_name_file_and_line(tmp_path, stem, text, needle):
    folder = tmp_path / "det"
    folder.mkdir()
    write(folder / f"{stem}.txt", text)
    with pytest.raises(DataError, match=needle):
        read_results(str(folder), RECORDS, "person", 1)


def test_missing_results_file(tmp_path):
    with pytest.raises(DataError, match="results file not found"):
        read_results(os.path.join(str(tmp_path), "none.txt"), RECORDS, "person", 1)
