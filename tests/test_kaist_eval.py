"""The KAIST devkit's numbers on the shared MBNet detections (../shared/data/kaist-eval), through
tools/evaluate_results.py and through the evaluator fed as model outputs, on roots converted with
either setting; and results files the tool must refuse."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from cadet_d2.convert.cli import main as convert_main
from cadet_d2.engine import load_config
from cadet_d2.data import register_from_config
from cadet_d2.evaluation import MissRateEvaluator
from cadet_d2.evaluation.results_files import read_kaist_text
from cadet_d2.evaluation.score_results import as_outputs
from cadet_d2.utils.tool import run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data", "kaist-eval")
MBNET = os.path.join(SHARED, "MBNet_result.txt")
CONFIG = os.path.join(REPO, "configs", "datasets", "kaist", "Base-KAIST.yaml")
needs_shared = pytest.mark.skipif(not os.path.isfile(MBNET), reason="../shared/data/kaist-eval is absent")

# The KAIST devkit (kaist_eval_full.m + bbGt.m, GNU Octave) on MBNet_result.txt: MR^-2 and recall, %
# (../shared/data/kaist-eval/README.md).
DEVKIT = {"reasonable": (8.13, 98.42), "reasonable-day": (8.28, 98.58), "reasonable-night": (7.86, 98.07),
          "near": (0.00, 100.00), "medium": (16.07, 97.62), "far": (55.99, 84.39),
          "occ-none": (27.74, 93.84), "occ-partial": (35.43, 89.50), "occ-heavy": (59.14, 76.55)}
SETS = {"kaist_test": 8.13, "kaist_test_day": 8.28, "kaist_test_night": 7.86}


def tool():
    spec = importlib.util.spec_from_file_location("evaluate_results_cli", os.path.join(REPO, "tools",
                                                                                        "evaluate_results.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def png_640x512() -> bytes:
    """A 640 x 512 grey PNG (the converter reads image headers only)."""
    import cv2

    ok, buf = cv2.imencode(".png", np.zeros((512, 640), dtype=np.uint8))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def kaist_src(tmp_path_factory):
    """A KAIST tree of the 2,252 test frames: the shared annotations linked in, one placeholder PNG
    hard-linked as every visible and lwir image."""
    src = tmp_path_factory.mktemp("kaist_src")
    image = src / "placeholder.png"
    image.write_bytes(png_640x512())
    for name in sorted(os.listdir(os.path.join(SHARED, "annotations"))):
        s, v, i = name[:-4].split("_")
        video = src / s / v
        for sub in ("visible", "lwir"):
            os.makedirs(video / sub, exist_ok=True)
            os.link(image, video / sub / f"{i}.png")
        os.symlink(os.path.abspath(os.path.join(SHARED, "annotations", name)), video / f"{i}.txt")
    return src


@pytest.fixture(scope="module")
def converted(kaist_src, tmp_path_factory):
    """setting -> a data root converted from ``kaist_src`` with it (each converted once)."""
    roots = {}

    def get(setting: str) -> str:
        if setting not in roots:
            out = tmp_path_factory.mktemp(f"kaist_{setting}") / "root"
            assert convert_main(["kaist", "--src", str(kaist_src), "--out", str(out), "--setting", setting]) == 0
            roots[setting] = str(out)
        return roots[setting]

    return get


@pytest.fixture(scope="module", params=["reasonable", "all"])
def kaist_root(request, converted):
    return converted(request.param)


@needs_shared
def test_tool_gives_the_devkit_numbers(kaist_root, tmp_path):
    metrics = tool().main(["--config-file", CONFIG, "--results", MBNET, "--json", str(tmp_path / "m.json"),
                           "CADET.DATA.ROOT", kaist_root])["kaist_test"]
    for name, (mr, _) in DEVKIT.items():
        assert round(metrics[f"MR-2 {name}"], 2) == pytest.approx(mr, abs=1e-9), name
    assert 0 < metrics["AP50"] <= 100  # COCO AP of the same detections
    saved = json.load(open(tmp_path / "m.json"))
    assert saved["datasets"]["kaist_test"]["MR-2 reasonable"] == pytest.approx(metrics["MR-2 reasonable"])
    assert saved["results"] == {"kaist_test": MBNET}
    curves = json.load(open(tmp_path / "1" / "kaist_test.json"))["settings"]
    for name, (mr, recall) in DEVKIT.items():
        assert round(curves[name]["recall"], 2) == pytest.approx(recall, abs=1e-9), name
    assert (tmp_path / "1" / "kaist_test.png").stat().st_size > 0
    assert (tmp_path / "miss_rate_kaist_test.png").stat().st_size > 0


@needs_shared
def test_evaluator_fed_as_model_outputs(converted, tmp_path):
    """Each test set of a root converted with ``--setting all`` (no person made an ignore region),
    the MBNet detections of its frames as the outputs of a model: the reasonable numbers of the
    published table (day and night are the frames of each set)."""
    cfg = load_config(CONFIG, ["CADET.DATA.ROOT", converted("all"), "OUTPUT_DIR", str(tmp_path)])
    register_from_config(cfg)
    everything = DatasetCatalog.get("kaist_test")
    by_stem = read_kaist_text(MBNET, everything)
    stems = {r["stem"]: r["image_id"] for r in everything}
    for name, expected in SETS.items():
        evaluator = MissRateEvaluator(cfg, name)
        records = DatasetCatalog.get(name)
        preds = {r["image_id"]: by_stem[stems[r["stem"]]] for r in records}
        evaluator.reset()
        for inp, out in as_outputs(records, preds, 0):
            evaluator.process([inp], [out])
        result = evaluator.evaluate()["miss_rate"]
        assert round(result["MR-2 reasonable"], 2) == pytest.approx(expected, abs=1e-9), name
        if name == "kaist_test":  # every devkit setting
            for setting, (mr, _) in DEVKIT.items():
                assert round(result[f"MR-2 {setting}"], 2) == pytest.approx(mr, abs=1e-9), setting
        assert ("MR-2 reasonable-day" in result) == (name == "kaist_test")  # a set of one time of day: left out


@needs_shared
def test_per_frame_files_and_coco_json_give_the_same(converted, tmp_path):
    """The MBNet detections of the night set's frames as per-frame 0-based files and as COCO
    results: the same numbers as the KAIST text file."""
    root = converted("reasonable")
    cfg = load_config(CONFIG, ["CADET.DATA.ROOT", root])
    register_from_config(cfg)
    everything = DatasetCatalog.get("kaist_test")
    preds = read_kaist_text(MBNET, everything)
    stems = {r["stem"]: r["image_id"] for r in everything}
    frames, coco = tmp_path / "frames", []
    frames.mkdir()
    for r in DatasetCatalog.get("kaist_test_night"):
        boxes, scores = preds[stems[r["stem"]]]
        with open(frames / f"{r['stem']}.txt", "w") as f:
            for (x1, y1, x2, y2), s in zip(boxes, scores):
                f.write(f"person {x1 - 1:.4f} {y1 - 1:.4f} {x2 - 1:.4f} {y2 - 1:.4f} {s:.8f}\n")
                coco.append({"image_id": r["image_id"], "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "score": float(s)})
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    metrics = tool().main(["--config-file", CONFIG, "--results", str(frames), "--results", str(tmp_path / "coco.json"),
                           "--dataset", "kaist_test_night", "--out", str(tmp_path / "out"), "CADET.DATA.ROOT", root,
                           "CADET.TEST.MISS_RATE.SETTINGS", "['reasonable', 'far']"])
    a, b = metrics[f"kaist_test_night {frames}"], metrics[f"kaist_test_night {tmp_path / 'coco.json'}"]
    assert {k for k in a if k.startswith("MR-2")} == {"MR-2 reasonable", "MR-2 far"}
    assert round(a["MR-2 reasonable"], 2) == round(b["MR-2 reasonable"], 2) == 7.86
    assert a["MR-2 far"] == pytest.approx(b["MR-2 far"], abs=1e-3)
    assert a["AP"] == pytest.approx(b["AP"], abs=1e-3)
    assert (tmp_path / "out" / "miss_rate_kaist_test_night.png").is_file()


@needs_shared
def test_results_file_with_frames_the_set_lacks(converted, tmp_path):
    """The 2,252-frame MBNet file against the 797-frame night set: an error naming file and line."""
    with pytest.raises(SystemExit, match=r"error: .*MBNet_result.txt:\d+: frame 798 is not one of the set's "
                                         r"frames 1..797"):
        run_tool(lambda: tool().main(["--config-file", CONFIG, "--results", MBNET, "--dataset", "kaist_test_night",
                                      "--out", str(tmp_path), "CADET.DATA.ROOT", converted("all")]))
