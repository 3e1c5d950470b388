"""tools/predict.py on inputs with bad files: a stop naming the file (CADET.DATA.ON_ERROR raise) or
a counted skip that leaves the other images' results as they are (ON_ERROR skip)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from cadet_d2.data import DataError
from cadet_d2.data.pairs import read_pairs_csv
from cadet_d2.inference import predict_files

from test_paired import pair_cfg, pairs_root

OPTS = ["MODEL.BACKBONE.NAME", "build_dual_mit_fpn_backbone", "CADET.FUSION.NAME", "sum",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10"]


@pytest.fixture
def setup(tmp_path, one_thread) -> dict:
    """A pairs.csv of 2 good pairs, then a truncated JPEG, an empty thermal cell and a thermal
    file that does not exist; the weights of a tiny model."""
    from detectron2.modeling import build_model

    root = pairs_root(tmp_path, test_sets=())
    pairs = read_pairs_csv(os.path.join(root, "train", "pairs.csv"))
    cut = str(tmp_path / "cut.jpg")
    with open(pairs[2].files["rgb"], "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    good = "".join(f"{p.stem},{p.files['rgb']},{p.files['thermal']}\n" for p in pairs[:2])
    index = tmp_path / "pairs.csv"
    index.write_text("stem,rgb,thermal\n" + good + f"cut,{cut},{pairs[2].files['thermal']}\n"
                     f"empty,{pairs[3].files['rgb']},\n" f"gone,{pairs[4].files['rgb']},{tmp_path / 'gone.png'}\n")
    (tmp_path / "good.csv").write_text("stem,rgb,thermal\n" + good)
    cfg = pair_cfg(root, str(tmp_path / "o"), *OPTS, test_sets=())
    torch.manual_seed(0)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(tmp_path / "w.pth")
    torch.save({"model": build_model(cfg).state_dict()}, cfg.MODEL.WEIGHTS)
    return {"cfg": cfg, "index": str(index), "good": str(tmp_path / "good.csv"), "cut": cut, "tmp": tmp_path}


def test_a_bad_pair_stops_naming_it(setup):
    with pytest.raises(DataError, match=r"cut\.jpg: truncated image"):
        predict_files(setup["cfg"], [setup["index"]], str(setup["tmp"] / "p"), progress=False)
    assert not os.path.exists(setup["tmp"] / "p" / "predictions.json")
    (setup["tmp"] / "one.csv").write_text(open(setup["index"]).read().replace(f"cut,{setup['cut']}", "x,"))
    with pytest.raises(DataError, match=r"one\.csv:4: empty rgb path for stem 'x'"):
        predict_files(setup["cfg"], [str(setup["tmp"] / "one.csv")], str(setup["tmp"] / "p"), progress=False)
    lines = open(setup["index"]).read().splitlines()
    (setup["tmp"] / "two.csv").write_text("\n".join([lines[0], lines[4]]) + "\n")
    with pytest.raises(DataError, match=r"two\.csv:2: empty thermal path for stem 'empty'"):
        predict_files(setup["cfg"], [str(setup["tmp"] / "two.csv")], str(setup["tmp"] / "p"), progress=False)


def test_on_error_skip_counts_bad_pairs_and_keeps_the_others(setup):
    cfg = setup["cfg"].clone()
    cfg.CADET.DATA.ON_ERROR = "skip"
    out, ref = str(setup["tmp"] / "p"), str(setup["tmp"] / "ref")
    summary = predict_files(cfg, [setup["index"]], out, score_thresh=0.0, vis=True, progress=False)
    assert summary["images"] == 5 and summary["pictures"] == 2
    assert [s["image_id"] for s in summary["skipped"]] == [2, 3, 4]
    errors = [s["error"] for s in summary["skipped"]]
    assert "cut.jpg: truncated image" in errors[0]
    assert errors[1] == f"{setup['index']}:5: empty thermal path for stem 'empty'"
    assert errors[2].startswith(f"{setup['index']}:6: thermal file ") and errors[2].endswith("gone.png not found")
    predict_files(setup["cfg"], [setup["good"]], ref, score_thresh=0.0, progress=False)
    got, want = (json.load(open(os.path.join(d, "predictions.json"))) for d in (out, ref))
    assert got == want and {r["image_id"] for r in got} == {0, 1}  # ids: positions in the inputs
    assert sorted(os.listdir(os.path.join(out, "vis"))) == ["train000.png", "train001.png"]


def test_on_error_skip_drops_a_truncated_npy_of_a_folder(setup, tmp_path):
    from cadet_d2.inference import BatchPredictor

    folder = tmp_path / "npy"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"a{i}.npy", np.random.default_rng(i).integers(0, 255, (48, 64, 5), dtype=np.uint8))
    with open(folder / "a1.npy", "rb") as f:
        half = f.read()[:3000]
    with open(folder / "a1.npy", "wb") as f:
        f.write(half)
    cfg = setup["cfg"].clone()
    cfg.CADET.INPUT.MODALITIES = ["rgb", "thermal", "event"]
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.MODEL.WEIGHTS = [0.0] * 5, [1.0] * 5, ""
    files = [str(folder / "a0.npy"), str(folder / "a1.npy")]
    with pytest.raises(DataError, match=r"a1\.npy: unreadable \.npy"):
        BatchPredictor(cfg)(files)
    predictor = BatchPredictor(cfg, on_error="skip")
    preds = predictor(files)
    assert preds[1] is None and len(preds[0]) > 0
    assert [i for i, _ in predictor.skipped] == [1] and "a1.npy" in predictor.skipped[0][1]


def test_an_empty_partner_cell_matters_only_for_a_modality_read(setup):
    """A data set's pairs.csv with an empty thermal cell: an rgb-only set reads the pair, an
    rgb + thermal set stops naming the line, or with on_error "skip" drops that pair only."""
    from cadet_d2.data.datasets import load_pair_dicts

    tmp = setup["tmp"]
    lines = open(setup["index"]).read().splitlines()
    index = tmp / "set.csv"
    index.write_text("\n".join([lines[0], lines[1], lines[4]]) + "\n")  # a good pair, then the empty cell
    pairs = read_pairs_csv(str(index))
    dicts, _ = load_pair_dicts(pairs, str(tmp), str(tmp), 1, modalities=("rgb",), unlabeled="negative")
    assert [d["pair"] for d in dicts] == [{"rgb": p.files["rgb"]} for p in pairs]
    with pytest.raises(DataError, match=r"set\.csv:3: empty thermal path for stem 'empty'"):
        load_pair_dicts(pairs, str(tmp), str(tmp), 1, unlabeled="negative")
    dicts, _ = load_pair_dicts(pairs, str(tmp), str(tmp), 1, unlabeled="negative", on_error="skip")
    assert [d["file_name"] for d in dicts] == [pairs[0].files["rgb"]]
