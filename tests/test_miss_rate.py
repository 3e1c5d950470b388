"""KAIST's log-average miss rate: a case worked by hand, edge cases, and the evaluator in a run."""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, BoxMode, Instances
from torch import nn

from cadet_d2.engine import load_config
from cadet_d2.evaluation import box_metrics, build_evaluator, format_table
from cadet_d2.evaluation.miss_rate import (REF_FPPI, MissRateEvaluator, check_miss_rate_config, evaluate_settings,
                                           log_average_miss_rate, match_image)
from cadet_d2.evaluation.miss_rate_gt import SETTINGS
from cadet_d2.evaluation.coco import no_detections_as_zero

from conftest import registered_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERSON, CAR = 0, 1
ALL, REASONABLE = SETTINGS["all"], SETTINGS["reasonable"]


def evaluate_subset(records: list[dict], predictions: dict, class_id: int, setting) -> tuple[float, int]:
    """(MR^-2 in [0, 1], regular gt boxes) of one setting, ground truth from the dataset dicts."""
    res = evaluate_settings(records, predictions, class_id, "", (setting,))[setting.name]
    return res.mr, res.num_pos


def gt(box, cls=PERSON, occlusion=None, crowd=0) -> dict:
    a = {"bbox": list(box), "bbox_mode": BoxMode.XYXY_ABS, "category_id": cls, "iscrowd": crowd}
    if occlusion is not None:
        a["occlusion"] = occlusion
    return a


# Four 640 x 512 images (XYXY boxes in pixels); detections (box, score, class).
#  image 1: G1 person h 100, no occlusion;  G2 person h 100, heavy occlusion (2)
#           D1 0.9 on G1;  D2 0.6 on G2
#  image 2: G3 person h 40 (short);  R1 ignore region (iscrowd) 100 x 200
#           D3 0.8 inside R1 (IoU with R1 only 0.2; intersection / detection area 1.0);  D4 0.5 on G3 (h 40)
#  image 3: G4 person h 120, partial occlusion (1)
#           D5 0.7 on nothing;  D6 0.4 on G4
#  image 4: G5 person h 100 (never detected);  a car
#           D7 0.3 on nothing;  a car detection 0.95 on the car (another class: not counted)
RECORDS = [
    {"image_id": 1, "file_name": "i1", "height": 512, "width": 640,
     "annotations": [gt((100, 100, 140, 200), occlusion=0), gt((300, 100, 340, 200), occlusion=2)]},
    {"image_id": 2, "file_name": "i2", "height": 512, "width": 640,
     "annotations": [gt((50, 50, 70, 90), occlusion=0), gt((400, 100, 500, 300), crowd=1)]},
    {"image_id": 3, "file_name": "i3", "height": 512, "width": 640,
     "annotations": [gt((200, 100, 250, 220), occlusion=1)]},
    {"image_id": 4, "file_name": "i4", "height": 512, "width": 640,
     "annotations": [gt((500, 200, 540, 300)), gt((100, 100, 200, 160), cls=CAR)]},
]
DETECTIONS = {
    1: [((100, 100, 140, 200), 0.9, PERSON), ((300, 100, 340, 200), 0.6, PERSON)],
    2: [((420, 150, 460, 250), 0.8, PERSON), ((50, 50, 70, 90), 0.5, PERSON)],
    3: [((10, 10, 50, 110), 0.7, PERSON), ((200, 100, 250, 220), 0.4, PERSON)],
    4: [((300, 300, 340, 400), 0.3, PERSON), ((100, 100, 200, 160), 0.95, CAR)],
}
# "all": positives G1..G5 = 5 (R1 is an ignore region), 4 images. By score, D3 left out (on R1):
#   D1 tp  fppi 0    miss 4/5
#   D5 fp  fppi 1/4  miss 4/5
#   D2 tp  fppi 1/4  miss 3/5
#   D4 tp  fppi 1/4  miss 2/5
#   D6 tp  fppi 1/4  miss 1/5
#   D7 fp  fppi 2/4  miss 1/5
# Reference FPPI 0.01, 0.018, 0.032, 0.056, 0.1, 0.178 (< 1/4): last point with fppi <= ref is D1
# -> miss 0.8 (6 points); 0.316, 0.562, 1.0: D7 (the curve ends at 0.5) -> miss 0.2 (3 points).
MISS_ALL = [0.8] * 6 + [0.2] * 3
# "reasonable": positives G1, G4, G5 = 3 (G2 heavy and G3 short become ignore regions).
# Detections are not filtered: D3 on R1, D2 on G2 and D4 on G3 fall on ignore regions: ignored.
#   D1 tp  fppi 0    miss 2/3
#   D5 fp  fppi 1/4  miss 2/3
#   D6 tp  fppi 1/4  miss 1/3
#   D7 fp  fppi 2/4  miss 1/3
# -> miss 2/3 at the 6 points below 1/4, 1/3 at the 3 others.
MISS_REASONABLE = [2 / 3] * 6 + [1 / 3] * 3


def log_average(misses: list[float]) -> float:
    return math.exp(sum(math.log(m) for m in misses) / len(misses))


def predictions_of(detections: dict, cls: int = PERSON) -> dict:
    out = {}
    for image_id, dets in detections.items():
        mine = [(b, s) for b, s, c in dets if c == cls]
        out[image_id] = (np.array([b for b, _ in mine], dtype=np.float64).reshape(-1, 4),
                         np.array([s for _, s in mine], dtype=np.float64))
    return out


def test_reference_points_are_nine_in_log_space():
    np.testing.assert_allclose(REF_FPPI, [10 ** (-2 + 0.25 * i) for i in range(9)])


def test_hand_case_all_and_reasonable():
    mr_all, n_all = evaluate_subset(RECORDS, predictions_of(DETECTIONS), PERSON, ALL)
    mr_reasonable, n_reasonable = evaluate_subset(RECORDS, predictions_of(DETECTIONS), PERSON, REASONABLE)
    assert (n_all, n_reasonable) == (5, 3)
    assert mr_all == pytest.approx(log_average(MISS_ALL))  # 0.8^(2/3) * 0.2^(1/3) = 0.5040
    assert mr_reasonable == pytest.approx(log_average(MISS_REASONABLE))  # = 0.5291
    assert mr_all == pytest.approx(0.5040, abs=1e-4) and mr_reasonable == pytest.approx(0.5291, abs=1e-4)


def test_miss_rate_at_each_reference_point():
    # Image 1 of the hand case, "all": D1 on G1 and D2 on G2 are both true positives.
    flags, n = match_image(np.array([[100, 100, 140, 200], [300, 100, 340, 200]]), np.array([0.9, 0.6]),
                           np.array([[100, 100, 140, 200], [300, 100, 340, 200]]), np.array([False, False]))
    assert n == 2 and flags.tolist() == [1, 1]
    # A false positive first, in 2 images: fppi 1/2 before any tp -> miss 1.0 below 0.5.
    mr, at_ref = log_average_miss_rate(np.array([0.9, 0.8]), np.array([0, 1]), num_pos=2, num_images=2)
    np.testing.assert_allclose(at_ref, [1.0] * 7 + [0.5] * 2)  # 0.562 and 1.0 are the points >= 0.5
    assert mr == pytest.approx(math.exp(2 * math.log(0.5) / 9))


def test_no_detections_is_miss_rate_one():
    empty = {i: (np.zeros((0, 4)), np.zeros(0)) for i in range(1, 5)}
    for subset in (ALL, REASONABLE):
        mr, _ = evaluate_subset(RECORDS, empty, PERSON, subset)
        assert mr == pytest.approx(1.0)


def test_perfect_detections_is_miss_rate_zero():
    perfect = {}
    for r in RECORDS:
        boxes = [a["bbox"] for a in r["annotations"] if a["category_id"] == PERSON and not a["iscrowd"]]
        perfect[r["image_id"]] = (np.array(boxes, dtype=np.float64).reshape(-1, 4), np.full(len(boxes), 0.9))
    for subset in (ALL, REASONABLE):
        mr, _ = evaluate_subset(RECORDS, perfect, PERSON, subset)
        assert mr == pytest.approx(0.0, abs=1e-9)


def test_detection_on_ignore_region_is_not_a_false_positive():
    region = np.array([[400, 100, 500, 300]])
    inside = np.array([[420, 150, 460, 250]])  # IoU 0.2 with the region, all of it inside
    flags, n = match_image(inside, np.array([0.8]), region, np.array([True]))
    assert flags.tolist() == [-1] and n == 0
    flags, _ = match_image(inside, np.array([0.8]), region, np.array([False]))  # a regular box: IoU 0.2
    assert flags.tolist() == [0]
    # Only on the ignore region: 1 image, 1 person elsewhere, found; the ignored detection scores higher.
    records = [{"image_id": 0, "annotations": [gt((10, 10, 50, 110)), gt((400, 100, 500, 300), crowd=1)]}]
    preds = {0: (np.array([[420, 150, 460, 250], [10, 10, 50, 110]], dtype=np.float64), np.array([0.9, 0.5]))}
    mr, _ = evaluate_subset(records, preds, PERSON, ALL)
    # (were the region a regular box: fp at fppi 1 first, miss 1.0 at the 8 points below 1 -> MR 0.077)
    assert mr == pytest.approx(0.0, abs=1e-9)


def test_regular_match_preferred_to_ignore_region_and_gt_matched_once():
    boxes = np.array([[0, 0, 100, 100], [0, 0, 100, 100]], dtype=np.float64)  # a person inside a crowd region
    gt_boxes = np.array([[0, 0, 200, 200], [0, 0, 100, 100]], dtype=np.float64)
    flags, n = match_image(boxes, np.array([0.9, 0.8]), gt_boxes, np.array([True, False]))
    assert n == 1 and flags.tolist() == [1, -1]  # the second copy falls back on the region
    flags, _ = match_image(boxes, np.array([0.9, 0.8]), gt_boxes[1:], np.array([False]))
    assert flags.tolist() == [1, 0]  # without the region it is a duplicate: a false positive


def test_equal_overlaps_take_the_last_box_as_the_toolbox():
    # D1 (0.9) has IoU 80 / 120 = 0.67 with both G1 and G2; D2 (0.8) is G1 (IoU with G2: 60 / 140 =
    # 0.43). evalRes keeps the last of equal overlaps, so D1 takes G2 and D2 is left G1: two true
    # positives (taking the first, D1 -> G1, would leave D2 a false positive).
    gt_boxes = np.array([[0, 0, 100, 100], [40, 0, 140, 100]], dtype=np.float64)
    d1 = [20, 0, 120, 100]
    flags, _ = match_image(np.array([d1, [0, 0, 100, 100]]), np.array([0.9, 0.8]), gt_boxes, np.array([False, False]))
    assert flags.tolist() == [1, 1]


def test_no_ground_truth_gives_nan():
    mr, _ = log_average_miss_rate(np.array([0.5]), np.array([0]), num_pos=0, num_images=1)
    assert math.isnan(mr)


def test_bad_occlusion_names_the_file():
    records = [{"image_id": 0, "file_name": "set06/V000/I00001", "annotations": [gt((0, 0, 10, 60), occlusion=3)]}]
    with pytest.raises(ValueError, match=r"set06/V000/I00001.*occlusion = 3"):
        evaluate_subset(records, {0: (np.zeros((0, 4)), np.zeros(0))}, PERSON, ALL)


@pytest.fixture
def hand_dataset():
    name = "mr_hand_case"
    DatasetCatalog.register(name, lambda: [dict(r) for r in RECORDS])
    MetadataCatalog.get(name).set(thing_classes=["person", "car"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def mr_cfg(*opts: str):
    """The base config (validated) with the miss rate on."""
    return load_config(os.path.join(REPO, "configs", "Base-CADET.yaml"), ["CADET.TEST.MISS_RATE.ENABLED", "True", *opts])


class HandModel(nn.Module):
    """Returns the hand case's detections of each input's image."""

    def forward(self, inputs):
        outs = []
        for x in inputs:
            dets = DETECTIONS[x["image_id"]]
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.tensor([b for b, _, _ in dets], dtype=torch.float32))
            inst.scores = torch.tensor([s for _, s, _ in dets])
            inst.pred_classes = torch.tensor([c for _, _, c in dets])
            outs.append({"instances": inst})
        return outs


def test_evaluator_through_inference_on_dataset(hand_dataset, tmp_path):
    cfg = mr_cfg("OUTPUT_DIR", str(tmp_path), "CADET.TEST.MISS_RATE.SETTINGS", "['reasonable', 'all']")
    inputs = [[{"image_id": r["image_id"], "height": r["height"], "width": r["width"]}] for r in RECORDS]
    results = inference_on_dataset(HandModel(), inputs, build_evaluator(cfg, hand_dataset))
    assert set(results) == {"bbox", "miss_rate"}  # COCO AP stays
    assert list(results["miss_rate"]) == ["MR-2 reasonable", "MR-2 all"]  # the order of SETTINGS
    assert results["miss_rate"]["MR-2 all"] == pytest.approx(100 * log_average(MISS_ALL))
    assert results["miss_rate"]["MR-2 reasonable"] == pytest.approx(100 * log_average(MISS_REASONABLE))
    metrics = box_metrics({hand_dataset: results})[hand_dataset]
    assert {"AP", "AP50", "MR-2 all", "MR-2 reasonable"} <= set(metrics)
    table = format_table({hand_dataset: metrics})
    assert "MR-2 reasonable" in table.splitlines()[0] and "50.40" in table and "52.91" in table
    # the curves beside the metrics: OUTPUT_DIR/miss_rate/<set>.json (every setting) and .png (reasonable)
    with open(tmp_path / "miss_rate" / f"{hand_dataset}.json", encoding="utf-8") as f:
        curves = json.load(f)["settings"]
    assert curves["reasonable"]["MR-2"] == pytest.approx(100 * log_average(MISS_REASONABLE))
    assert curves["reasonable"]["positives"] == 3 and curves["reasonable"]["recall"] == pytest.approx(200 / 3)
    # the sampled curve: miss 2/3 below FPPI 1/4, then 1/3 up to the curve's end at 1/2
    fppi, miss = np.array(curves["reasonable"]["fppi"]), np.array(curves["reasonable"]["miss_rate"])
    assert fppi[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(miss[fppi < 0.25], 2 / 3)
    np.testing.assert_allclose(miss[fppi >= 0.25], 1 / 3)
    assert (tmp_path / "miss_rate" / f"{hand_dataset}.png").stat().st_size > 1000


def test_evaluator_class_by_name_from_config(hand_dataset):
    # CLASS car: the car (h 60, inside the border) is found (0.95), nothing else is a car -> miss 0.
    ev = MissRateEvaluator(mr_cfg("CADET.TEST.MISS_RATE.CLASS", "car", "CADET.TEST.MISS_RATE.SETTINGS",
                                  "['all', 'reasonable']"), hand_dataset)
    ev.reset()
    for r in RECORDS:
        x = {"image_id": r["image_id"], "height": r["height"], "width": r["width"]}
        ev.process([x], HandModel()([x]))
    out = ev.evaluate()["miss_rate"]
    assert out["MR-2 all"] == pytest.approx(0.0, abs=1e-6) and out["MR-2 reasonable"] == pytest.approx(0.0, abs=1e-6)


def test_unknown_class_stops_before_training(hand_dataset):
    cfg = mr_cfg("CADET.TEST.MISS_RATE.CLASS", "pedestrian", "DATASETS.TEST", f"('{hand_dataset}',)")
    with pytest.raises(ValueError, match="'pedestrian' is not a class of 'mr_hand_case'.*'person', 'car'"):
        check_miss_rate_config(cfg)


def test_default_settings_are_the_devkit_nine():
    assert list(mr_cfg().CADET.TEST.MISS_RATE.SETTINGS) == [
        "reasonable", "reasonable-day", "reasonable-night", "near", "medium", "far",
        "occ-none", "occ-partial", "occ-heavy"]


@pytest.mark.parametrize("key, value, needle", [
    ("SETTINGS", "['reasonable', 'tall']", "(['tall'] unknown)"),
    ("SETTINGS", "['far', 'far']", "at most once"),
    ("SETTINGS", "[]", "at least one"),
    ("IOU", "0.0", "IOU = 0.0 must lie in (0, 1]"),
])
def test_bad_settings_are_config_errors(key, value, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        mr_cfg(f"CADET.TEST.MISS_RATE.{key}", value)


def test_sensor_failure_zeroes_only_coco_metrics():
    nan = float("nan")
    out = no_detections_as_zero({"a": {"AP": nan, "AP50": nan, "MR-2 all": 100.0}})
    assert out == {"a": {"AP": 0.0, "AP50": 0.0, "MR-2 all": 100.0}}


def test_trainer_test_writes_miss_rate_for_every_set(tiny_root, tmp_path, caplog):
    """CadetTrainer.test on the tiny data root: MR-2 beside COCO AP for test, day and night sets."""
    from detectron2.modeling import build_model

    from cadet_d2.engine.trainer import CadetTrainer
    torch.manual_seed(0)
    out = str(tmp_path / "out")
    cfg = registered_cfg(tiny_root, out, "MODEL.BACKBONE.NAME", "build_dual_mit_fpn_backbone",
                         "CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum",
                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "CADET.TEST.MISS_RATE.ENABLED", "True",
                         "CADET.TEST.MISS_RATE.SETTINGS", "['all', 'far']")
    check_miss_rate_config(cfg)  # class "" -> class 0 ("object")
    CadetTrainer.test(cfg, build_model(cfg).eval())
    with open(os.path.join(out, "eval_metrics.json"), encoding="utf-8") as f:
        data = json.load(f)
    assert set(data["datasets"]) == {"synth_test", "synth_daytest1", "synth_nighttest1"}
    for name, m in data["datasets"].items():
        assert {"AP", "AP50", "MR-2 all", "MR-2 far"} <= set(m)
        assert 0.0 <= m["MR-2 all"] <= 100.0
        assert os.path.isfile(os.path.join(out, "miss_rate", f"{name}.png"))


def test_setup_stops_on_unknown_class(tiny_root, tmp_path):
    """tools/train_net.py's setup: a CLASS missing from the test sets stops before any training."""
    from detectron2.engine import default_argument_parser

    from cadet_d2.engine.setup import setup
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "Base-CADET.yaml"), "MODEL.DEVICE", "cpu",
        "CADET.DATA.ROOT", tiny_root, "OUTPUT_DIR", str(tmp_path / "run"),
        "CADET.TEST.MISS_RATE.ENABLED", "True", "CADET.TEST.MISS_RATE.CLASS", "person"])
    with pytest.raises(ValueError, match=r"CLASS = 'person' is not a class of 'synth_test' \(classes: \['object'\]\)"):
        setup(args)


def test_kaist_frames_without_bbgt_copies_are_warned_about():
    """A set of KAIST stems without <set>/bbgt (a root converted before the copies): the miss rate
    falls back on the dataset dicts and says that it is not the devkit's ground truth."""
    import logging

    name = "mr_old_kaist_root"
    records = [{"image_id": 0, "stem": "set06_V000_I00019", "file_name": "x", "width": 640, "height": 512,
                "annotations": [gt((100, 100, 140, 200))]}]
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(thing_classes=["person"])
    warnings = []
    handler = logging.Handler(logging.WARNING)  # on the logger: Detectron2's setup_logger stops propagation
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("cadet_d2.evaluation.miss_rate")
    logger.addHandler(handler)
    try:
        ev = MissRateEvaluator(name, settings=("reasonable",))
        ev.process([{"image_id": 0}], [{"instances": _instances([(100, 100, 140, 200)], [0.9])}])
        out = ev.evaluate()["miss_rate"]
    finally:
        logger.removeHandler(handler)
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert out["MR-2 reasonable"] == pytest.approx(0.0, abs=1e-6)
    assert any("holds KAIST frames but no <set>/bbgt/ folder" in w for w in warnings), warnings


def _instances(boxes, scores) -> Instances:
    inst = Instances((512, 640))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
    return inst
