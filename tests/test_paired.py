"""Paired image files as a data source (pairs.csv, folders per modality), their bad inputs, and
the checks before training (PIXEL_STD, empty/unlabeled test sets, fusion return values)."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog

from cadet_d2.data import DataError, MultiModalDatasetMapper, register_from_config
from cadet_d2.data.images import read_grey, reduction_factor

from conftest import tiny_cfg, write_labels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 80


def scene(rng, h=H, w=W, box=None):
    """(rgb (h, w, 3) uint8 RGB, thermal (h, w) uint8, yolo line) with one warm box."""
    rgb = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    thermal = rng.integers(0, 60, size=(h, w), dtype=np.uint8)
    x0, y0, bw, bh = box or (int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2)), w // 3, h // 3)
    rgb[y0:y0 + bh, x0:x0 + bw] = 150
    thermal[y0:y0 + bh, x0:x0 + bw] = 230
    line = f"0 {(x0 + bw / 2) / w:.6f} {(y0 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
    return rgb, thermal, line


def write_pair_set(folder, n=4, seed=0, rgb_ext=".jpg", thermal_ext=".png", labeled=True, size=(H, W),
                   event=False):
    """``folder/pairs.csv`` naming images in ``folder/../raw_<set>/`` (not copied next to it)."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(os.path.dirname(folder), "raw_" + os.path.basename(folder))
    os.makedirs(raw, exist_ok=True)
    os.makedirs(folder, exist_ok=True)
    rows = ["stem,rgb,thermal" + (",event" if event else "")]
    for i in range(n):
        stem = f"{os.path.basename(folder)}{i:03d}"
        rgb, thermal, line = scene(rng, *size)
        cv2.imwrite(os.path.join(raw, stem + "_rgb" + rgb_ext), rgb[:, :, ::-1])
        cv2.imwrite(os.path.join(raw, stem + "_ir" + thermal_ext), thermal)
        row = f"{stem},../{os.path.basename(raw)}/{stem}_rgb{rgb_ext},{os.path.join(raw, stem + '_ir' + thermal_ext)}"
        if event:
            cv2.imwrite(os.path.join(raw, stem + "_ev.png"), thermal // 2)
            row += f",../{os.path.basename(raw)}/{stem}_ev.png"
        rows.append(row)
        if labeled:
            write_labels(os.path.join(folder, "labels", stem + ".txt"), [line])
    with open(os.path.join(folder, "pairs.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return folder


def pairs_root(tmp_path, test_sets=("test",), **kw) -> str:
    root = str(tmp_path / "pairs")
    write_pair_set(os.path.join(root, "train"), n=6, **kw)
    for i, s in enumerate(test_sets):
        write_pair_set(os.path.join(root, s), n=3, seed=i + 1, **kw)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("person\n")
    return root


def pair_cfg(root, out, *opts, test_sets=("test",)):
    sets = "[" + ",".join(f"'{s}'" for s in test_sets) + "]"
    return tiny_cfg(root, out, "CADET.DATA.TRAIN_SET", "train", "CADET.DATA.TEST_SETS", sets,
                    "CADET.INPUT.MODALITIES", "['rgb','thermal']", "MODEL.PIXEL_MEAN", "[0,0,0,0]",
                    "MODEL.PIXEL_STD", "[1,1,1,1]", "DATASETS.TRAIN", "('synth_train',)",
                    "DATASETS.TEST", "(" + "".join(f"'synth_{s}'," for s in test_sets) + ")", *opts)


def test_pairs_root_registers_its_sets_and_reads_only_configured_modalities(tmp_path):
    root = pairs_root(tmp_path, test_sets=("test", "test_night"), event=True)
    cfg = pair_cfg(root, str(tmp_path / "o"), test_sets=("test", "test_night"))
    names = register_from_config(cfg)
    assert names == ["synth_train", "synth_test", "synth_test_night"]
    train = DatasetCatalog.get("synth_train")
    assert len(train) == 6 and len(DatasetCatalog.get("synth_test_night")) == 3
    d = train[0]
    assert sorted(d["pair"]) == ["rgb", "thermal"]  # event is in pairs.csv but not configured
    assert (d["height"], d["width"]) == (H, W) and d["file_name"] == d["pair"]["rgb"]
    assert os.path.isfile(d["pair"]["rgb"]) and "raw_train" in d["pair"]["rgb"]  # relative to pairs.csv
    out = MultiModalDatasetMapper(cfg, True)(d)
    assert out["image"].shape[0] == 4 and len(out["instances"]) == 1


def test_pair_stacks_channels_as_npy_does(tmp_path):
    """PNG pairs (lossless) give the same model input as the equivalent 5-channel .npy file."""
    root = pairs_root(tmp_path, rgb_ext=".png", event=True)
    npy = str(tmp_path / "npy")
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.INPUT.MODALITIES", "['thermal','rgb','event']",
                   "MODEL.PIXEL_MEAN", "[0,0,0,0,0]", "MODEL.PIXEL_STD", "[1,1,1,1,1]")
    register_from_config(cfg)
    d = DatasetCatalog.get("synth_train")[0]
    rgb = cv2.imread(d["pair"]["rgb"])[:, :, ::-1]
    five = np.concatenate([rgb, cv2.imread(d["pair"]["thermal"], 0)[:, :, None],
                           cv2.imread(d["pair"]["event"], 0)[:, :, None]], axis=2)
    os.makedirs(npy)
    np.save(os.path.join(npy, "a.npy"), five)
    mapper = MultiModalDatasetMapper(cfg, False)
    from_pair = mapper(d)["image"]
    from_npy = mapper({"file_name": os.path.join(npy, "a.npy"), "height": H, "width": W})["image"]
    assert torch.equal(from_pair, from_npy)
    assert torch.equal(from_pair[0], torch.from_numpy(five[:, :, 3]).float())  # thermal first, as configured


def test_thermal_bit_depth_and_grey_rules(tmp_path):
    t16 = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 3 + 7000)
    p16 = str(tmp_path / "t16.png")
    cv2.imwrite(p16, t16)
    assert cv2.imread(p16, cv2.IMREAD_UNCHANGED).dtype == np.uint16
    lo, hi = (float(v) for v in np.percentile(t16[::4, ::4], [1, 99]))
    got = read_grey(p16, percentiles=(1.0, 99.0))
    want = np.clip((t16.astype(np.float32) - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)
    assert got.dtype == np.uint8 and np.array_equal(got, want) and got.min() == 0 and got.max() == 255
    fixed = read_grey(p16, value_range=(7000, 7000 + 255 * 4))
    assert fixed[0, 0] == 0 and fixed[0, 4] == 3  # (7012 - 7000) / 4 = 3
    grey3 = np.repeat((t16 // 64).astype(np.uint8)[:, :, None], 3, axis=2)
    p3 = str(tmp_path / "grey3.png")
    cv2.imwrite(p3, grey3)
    assert np.array_equal(read_grey(p3), grey3[:, :, 0])
    pj = str(tmp_path / "grey3.jpg")
    cv2.imwrite(pj, grey3)
    first, again = read_grey(pj), read_grey(pj)  # the second read decodes the luma only
    assert np.array_equal(first, cv2.imread(pj, cv2.IMREAD_COLOR)[:, :, 0]) and np.array_equal(first, again)
    colour = grey3.copy()
    colour[5, 5, 1] += 1  # within CADET.INPUT.GREY_TOLERANCE: read as its luma
    pc = str(tmp_path / "colour.png")
    cv2.imwrite(pc, colour)
    assert np.array_equal(read_grey(pc), cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))
    with pytest.raises(DataError, match=r"colour\.png: 3-channel image whose channels differ by up to 1 grey"):
        read_grey(pc, tolerance=0)


def test_size_mismatch_resized_or_error_naming_the_file(tmp_path):
    root = pairs_root(tmp_path)
    d = os.path.join(os.path.dirname(root), "pairs", "raw_train")
    odd = sorted(f for f in os.listdir(d) if f.endswith("_ir.png"))[0]
    cv2.imwrite(os.path.join(d, odd), np.full((H // 2, W // 2), 200, np.uint8))
    cfg = pair_cfg(root, str(tmp_path / "o"))
    register_from_config(cfg)
    rec = next(r for r in DatasetCatalog.get("synth_train") if r["pair"]["thermal"].endswith(odd))
    img = MultiModalDatasetMapper(cfg, False)(rec)["image"]
    assert img.shape[0] == 4 and float(img[3].min()) == 200.0  # resized to the RGB size
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.INPUT.SIZE_MISMATCH", "error")
    register_from_config(cfg)
    with pytest.raises(DataError, match=rf"{odd}: thermal image is 32x40, the RGB image .* is 64x80"):
        DatasetCatalog.get("synth_train")


@pytest.mark.parametrize("suffix", ["_rgb.jpg", "_ir.png"])
def test_truncated_image_stops_registration_naming_the_file(tmp_path, suffix):
    root = pairs_root(tmp_path)
    d = os.path.join(os.path.dirname(root), "pairs", "raw_train")
    cut = sorted(f for f in os.listdir(d) if f.endswith(suffix))[0]
    path = os.path.join(d, cut)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) * 2 // 3])  # OpenCV would decode the JPEG, its last rows grey
    cfg = pair_cfg(root, str(tmp_path / "o"))
    register_from_config(cfg)
    with pytest.raises(DataError, match=rf"{cut}: truncated image: no (JPEG end-of-image marker|PNG IEND chunk)"):
        DatasetCatalog.get("synth_train")
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.DATA.ON_ERROR", "skip")
    register_from_config(cfg)
    assert len(DatasetCatalog.get("synth_train")) == 5  # skipped and counted


def test_pairs_csv_errors_name_file_and_line(tmp_path):
    root = pairs_root(tmp_path)
    csv = os.path.join(root, "train", "pairs.csv")
    lines = open(csv).read().splitlines()
    cfg = pair_cfg(root, str(tmp_path / "o"))

    def load_with(text):
        with open(csv, "w") as f:
            f.write(text)
        register_from_config(cfg)
        return DatasetCatalog.get("synth_train")

    with pytest.raises(DataError, match=r"pairs\.csv:1: header 'stem,visible,thermal'"):
        load_with("stem,visible,thermal\n" + "\n".join(lines[1:]))
    with pytest.raises(DataError, match=r"pairs\.csv:3: 2 fields, the header has 3"):
        load_with("\n".join(lines[:2] + ["x,y"]))
    with pytest.raises(DataError, match=r"pairs\.csv:3: thermal file .*nothere\.png not found"):
        load_with("\n".join(lines[:2] + ["x," + lines[1].split(",")[1] + ",nothere.png"]))
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.DATA.ON_ERROR", "skip")
    register_from_config(cfg)
    assert len(DatasetCatalog.get("synth_train")) == 1  # the missing partner is skipped, counted
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.INPUT.MODALITIES", "['rgb','thermal','event']",
                   "MODEL.PIXEL_MEAN", "[0,0,0,0,0]", "MODEL.PIXEL_STD", "[1,1,1,1,1]")
    register_from_config(cfg)
    with pytest.raises(DataError, match=r"pairs\.csv: CADET.INPUT.MODALITIES has \['event'\]"):
        DatasetCatalog.get("synth_test")


def test_folders_per_modality_pair_by_stem(tmp_path):
    root = tmp_path / "llvip"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            rgb, thermal, line = scene(rng)
            os.makedirs(root / "visible" / split, exist_ok=True)
            os.makedirs(root / "infrared" / split, exist_ok=True)
            cv2.imwrite(str(root / "visible" / split / f"{i:06d}.jpg"), rgb[:, :, ::-1])
            cv2.imwrite(str(root / "infrared" / split / f"{i:06d}.jpg"), np.repeat(thermal[:, :, None], 3, 2))
            write_labels(str(root / "labels" / split / f"{i:06d}.txt"), [line])
    opts = ("CADET.DATA.FOLDERS.rgb", "visible/{set}", "CADET.DATA.FOLDERS.thermal", "infrared/{set}",
            "CADET.DATA.FOLDERS.labels", "labels/{set}")
    cfg = pair_cfg(str(root), str(tmp_path / "o"), *opts)
    assert register_from_config(cfg) == ["synth_train", "synth_test"]
    train = DatasetCatalog.get("synth_train")
    assert [d["stem"] for d in train] == ["000000", "000001", "000002", "000003"]
    assert train[1]["pair"]["thermal"].endswith("infrared/train/000001.jpg")
    assert len(MultiModalDatasetMapper(cfg, True)(train[1])["instances"]) == 1
    os.remove(root / "infrared" / "test" / "000001.jpg")
    with pytest.raises(DataError, match=r"visible/test/000001\.jpg: no thermal partner: no file 000001\.\* in"):
        DatasetCatalog.get("synth_test")


@pytest.mark.parametrize("min_size", [64, 128])
def test_reduced_decoding_keeps_boxes_exact(tmp_path, min_size):
    """JPEG pairs decoded at 1/4 (min_size 64) or 1/2 (128) of 256x320: same boxes as a full decode
    (within 1 px), original height/width kept; the image size matches a full decode + resize."""
    rng = np.random.default_rng(3)
    folder = str(tmp_path / "big" / "train")
    write_pair_set(folder, n=3, size=(256, 320), thermal_ext=".jpg")
    root = os.path.dirname(folder)
    common = ("INPUT.MIN_SIZE_TRAIN", f"({min_size},)", "INPUT.MAX_SIZE_TRAIN", "1000", "INPUT.RANDOM_FLIP", "none")
    cfg_full = pair_cfg(root, str(tmp_path / "o"), "CADET.INPUT.REDUCED_DECODE", "False", *common, test_sets=())
    cfg_red = pair_cfg(root, str(tmp_path / "o"), *common, test_sets=())
    register_from_config(cfg_red)
    assert reduction_factor(256, 320, min_size, 1000) == 256 // min_size
    for d in DatasetCatalog.get("synth_train"):
        reduced_mapper = MultiModalDatasetMapper(cfg_red, True)
        assert reduced_mapper.decode_factor(d) == 256 // min_size
        full, red = MultiModalDatasetMapper(cfg_full, True)(d), reduced_mapper(d)
        assert full["image"].shape == red["image"].shape
        assert (red["height"], red["width"]) == (256, 320)
        b_full, b_red = full["instances"].gt_boxes.tensor, red["instances"].gt_boxes.tensor
        assert b_full.shape == b_red.shape == (1, 4)
        assert torch.allclose(b_full, b_red, atol=1.0)
        assert (full["image"] - red["image"]).abs().mean() < 20  # the same picture
    del rng


def test_ignore_regions_and_occlusion(tmp_path):
    root = pairs_root(tmp_path)
    stem = "train000"
    label = os.path.join(root, "train", "labels", stem + ".txt")
    first = open(label).read().strip()
    write_labels(label, [first + " 1"])
    write_labels(os.path.join(root, "train", "ignore", stem + ".txt"), ["0 0.9 0.9 0.1 0.1"])
    cfg = pair_cfg(root, str(tmp_path / "o"))
    register_from_config(cfg)
    d = next(r for r in DatasetCatalog.get("synth_train") if r["stem"] == stem)
    annos = d["annotations"]
    assert [(a["iscrowd"], a.get("occlusion")) for a in annos] == [(0, 1), (1, None)]
    assert len(MultiModalDatasetMapper(cfg, True)(d)["instances"]) == 1  # the ignore region is not trained on
    write_labels(label, [first + " 3"])
    register_from_config(pair_cfg(root, str(tmp_path / "o2")))
    with pytest.raises(DataError, match=r"train000\.txt:1: 6th field \(occlusion level\)"):
        DatasetCatalog.get("synth_train")


def test_pixel_std_zero_stops_naming_key_and_channel(tmp_path):
    with pytest.raises(ValueError, match=r"MODEL.PIXEL_STD entry 4 \(input channel 4, event\) is 0; "):
        tiny_cfg(str(tmp_path), str(tmp_path / "o"), "MODEL.PIXEL_STD", "[1,1,1,1,0]")


def test_check_data_never_suggests_zero_std(tiny_root):
    from cadet_d2.data.check import check_root

    for f in sorted(os.listdir(os.path.join(tiny_root, "images"))):
        p = os.path.join(tiny_root, "images", f)
        a = np.load(p)
        a[:, :, 4] = 0
        np.save(p, a)
    report = check_root(tiny_root)
    assert report.constant_channels == [4] and report.pixel_std[4] == 1.0 and min(report.pixel_std) > 0
    assert "file channel 4 is constant (0.0 in every pixel)" in report.format()


def _train_net(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


TINY = ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "100", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "CADET.FUSION.NAME", "sum", "CADET.FUSION.DEFAULT", "sum",
        "CADET.DATA.TRAIN_SET", "train", "CADET.INPUT.MODALITIES", "['rgb','thermal']",
        "MODEL.PIXEL_MEAN", "[60,60,60,60]", "MODEL.PIXEL_STD", "[50,50,50,50]", "DATASETS.TRAIN", "('synth_train',)"]


def test_train_and_evaluate_on_a_pairs_root(tmp_path):
    """rgb+thermal JPEG/PNG pairs train and evaluate; an unlabeled night set with UNLABELED negative
    is evaluated as images without objects (no COCO AP, its detections saved)."""
    import shutil

    root = pairs_root(tmp_path, test_sets=("test_day", "test_night"))
    shutil.rmtree(os.path.join(root, "test_night", "labels"))
    out = str(tmp_path / "run")
    r = _train_net("--config-file", "configs/Base-CADET.yaml", *TINY, "SOLVER.MAX_ITER", "2",
                   "CADET.DATA.ROOT", root, "CADET.DATA.TEST_SETS", "['test_day','test_night']",
                   "CADET.DATA.UNLABELED", "negative",
                   "DATASETS.TEST", "('synth_test_day','synth_test_night')", "OUTPUT_DIR", out)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "eval_metrics.json")) as f:
        metrics = json.load(f)["datasets"]
    assert sorted(metrics) == ["synth_test_day", "synth_test_night"] and "AP" in metrics["synth_test_day"]
    assert "images without any box" in r.stdout + r.stderr
    assert os.path.isfile(os.path.join(out, "inference", "synth_test_night", "coco_instances_results.json"))


@pytest.mark.parametrize("unlabeled", ["skip", "negative"])
def test_unlabeled_test_set_stops_before_training_or_is_negative(tmp_path, unlabeled, caplog):
    from cadet_d2.data.ready import DatasetCheckError, check_datasets

    root = str(tmp_path / "pairs")
    write_pair_set(os.path.join(root, "train"), n=4)
    write_pair_set(os.path.join(root, "test"), n=2, labeled=False)
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.DATA.UNLABELED", unlabeled)
    register_from_config(cfg)
    if unlabeled == "skip":
        with pytest.raises(DatasetCheckError, match=r"test set 'synth_test' \(" + os.path.join(root, "test")
                           + r"\) has no labeled image .* set CADET.DATA.UNLABELED negative"):
            check_datasets(cfg)
    else:
        check_datasets(cfg)
        assert "synth_test" in caplog.text and "2 images without any box; it is evaluated as images without " \
            "objects: COCO AP is undefined there" in caplog.text and "metrics table shows nan" in caplog.text


def test_training_set_without_labels_stops_naming_its_label_folder(tmp_path):
    """Every training image unlabeled (e.g. LLVIP's folders read without its labels): a clear stop
    before training, naming the set, its folder and the label folder searched."""
    from cadet_d2.data.ready import DatasetCheckError, check_datasets

    root = str(tmp_path / "pairs")
    write_pair_set(os.path.join(root, "train"), n=3, labeled=False)
    write_pair_set(os.path.join(root, "test"), n=2)
    cfg = pair_cfg(root, str(tmp_path / "o"))
    register_from_config(cfg)
    with pytest.raises(DatasetCheckError, match=r"training set 'synth_train' \(" + os.path.join(root, "train")
                       + r"\) has no usable image: .*no " + os.path.join(root, "train", "labels", "<stem>.txt")
                       + r"; CADET.DATA.UNLABELED skip"):
        check_datasets(cfg)
    check_datasets(cfg, train=False)  # evaluation alone does not need it
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.DATA.UNLABELED", "negative")
    register_from_config(cfg)
    check_datasets(cfg)  # its images are negatives


def test_class_count_other_than_the_heads_stops_before_training(tmp_path):
    """classes.txt with 2 names and MODEL.ROI_HEADS.NUM_CLASSES 1: stopped, naming both counts
    and the file; CADET.DATA.CLASSES and NUM_CLASSES that agree pass."""
    from cadet_d2.data.ready import DatasetCheckError, check_datasets

    root = str(tmp_path / "pairs")
    write_pair_set(os.path.join(root, "train"), n=2)
    write_pair_set(os.path.join(root, "test"), n=1)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("person\ncar\n")
    cfg = pair_cfg(root, str(tmp_path / "o"))
    register_from_config(cfg)
    with pytest.raises(DatasetCheckError, match=r"data set 'synth_train' .* has 2 classes \['person', 'car'\] \("
                       + os.path.join(root, "classes.txt") + r"\), but MODEL.ROI_HEADS.NUM_CLASSES is 1: "
                       r"set MODEL.ROI_HEADS.NUM_CLASSES 2"):
        check_datasets(cfg)
    cfg = pair_cfg(root, str(tmp_path / "o"), "MODEL.ROI_HEADS.NUM_CLASSES", "2")
    register_from_config(cfg)
    check_datasets(cfg)


def test_setup_checks_test_sets_before_training(tmp_path):
    """tools/train_net.py's setup() stops on an unlabeled test set, before building anything."""
    from detectron2.engine import default_argument_parser

    from cadet_d2.data.ready import DatasetCheckError
    from cadet_d2.engine.setup import setup

    root = str(tmp_path / "pairs")
    write_pair_set(os.path.join(root, "train"), n=2)
    write_pair_set(os.path.join(root, "test"), n=1, labeled=False)
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "Base-CADET.yaml"), *TINY, "CADET.DATA.ROOT", root,
        "CADET.DATA.TEST_SETS", "['test']", "DATASETS.TEST", "('synth_test',)", "OUTPUT_DIR", str(tmp_path / "run")])
    with pytest.raises(DatasetCheckError, match=r"test set 'synth_test' .* has no labeled image"):
        setup(args)


def test_empty_and_unknown_test_sets_stop(tmp_path):
    from cadet_d2.data.ready import DatasetCheckError, check_datasets

    root = pairs_root(tmp_path)
    with open(os.path.join(root, "test", "pairs.csv"), "w") as f:
        f.write("stem,rgb,thermal\n")
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.DATA.UNLABELED", "negative")
    register_from_config(cfg)
    with pytest.raises(DatasetCheckError, match=r"test set 'synth_test' \(.*test\) holds no image"):
        check_datasets(cfg)
    cfg = pair_cfg(root, str(tmp_path / "o"), "DATASETS.TEST", "('synth_no_such_set',)")
    register_from_config(cfg)
    with pytest.raises(DatasetCheckError, match=r"'synth_no_such_set' is not registered.*registers \['synth_test', "
                                                r"'synth_train'\]"):
        check_datasets(cfg)


def test_fusion_returning_a_tensor_or_a_bad_value():
    from cadet_d2.modeling.fusion.base import FusionOutput, fusion_output

    class Plain(torch.nn.Module):
        pass

    rgb, aux = torch.rand(1, 4, 3, 3), torch.rand(1, 4, 3, 3)
    fused = rgb + aux
    out = fusion_output(Plain(), fused, rgb, aux)
    assert isinstance(out, FusionOutput) and out.fused is fused and out.rgb is rgb and out.aux is aux
    with pytest.raises(TypeError, match=r"fusion module Plain returned a tuple of 2 \(a tensor of shape "
                                        r"\(1, 4, 3, 3\), a tensor of shape \(1, 4, 3, 3\)\)"):
        fusion_output(Plain(), (rgb, aux), rgb, aux)
    with pytest.raises(TypeError, match=r"fusion module Plain returned a dict"):
        fusion_output(Plain(), {"fused": fused}, rgb, aux)
    with pytest.raises(TypeError, match=r"fused map of shape \(1, 8, 3, 3\)"):
        fusion_output(Plain(), torch.cat([rgb, aux], 1), rgb, aux)


def test_dual_backbone_accepts_a_fusion_returning_a_tensor(tmp_path):
    from detectron2.modeling import build_backbone

    from cadet_d2.modeling.fusion import FUSION_REGISTRY

    if "test_plain_sum" not in FUSION_REGISTRY:
        @FUSION_REGISTRY.register()
        class test_plain_sum(torch.nn.Module):  # noqa: N801  (registry name)
            def __init__(self, cfg, channels, stage):
                super().__init__()

            def forward(self, rgb, aux):
                return rgb + aux

    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), "CADET.FUSION.NAME", "test_plain_sum",
                   "CADET.FUSION.DEFAULT", "test_plain_sum")
    backbone = build_backbone(cfg).bottom_up
    outs = backbone(torch.rand(1, 5, 64, 64))
    assert sorted(outs) == ["res2", "res3", "res4", "res5"] and outs["res2"].shape[1] == 32


def test_export_contract_preprocesses_pairs_like_the_test_mapper(tmp_path):
    from cadet_d2.export.contract import build_meta, preprocess_pair

    root = pairs_root(tmp_path)
    d = os.path.join(root, "raw_test")
    cv2.imwrite(os.path.join(d, sorted(f for f in os.listdir(d) if f.endswith("_ir.png"))[0]),
                np.full((H // 2, W // 2), 90, np.uint8))  # a partner of another size: resized alike
    cfg = pair_cfg(root, str(tmp_path / "o"), "CADET.INPUT.MODALITIES", "['thermal','rgb']")
    register_from_config(cfg)
    meta = build_meta(cfg, (64, 80), {})
    assert meta["input"]["paired_files"]["channels"] == {"thermal": 1, "rgb": 3}
    mapper = MultiModalDatasetMapper(cfg, False)
    for rec in DatasetCatalog.get("synth_test"):
        assert torch.equal(torch.from_numpy(preprocess_pair(rec["pair"], meta)[0]), mapper(rec)["image"])


def test_check_data_reads_a_pairs_root(tmp_path):
    from cadet_d2.data.check import check_root

    root = pairs_root(tmp_path)
    d = os.path.join(root, "raw_test")
    ir = sorted(f for f in os.listdir(d) if f.endswith("_ir.png"))
    cv2.imwrite(os.path.join(d, ir[0]), np.zeros((H // 2, W // 2), np.uint8))
    os.remove(os.path.join(d, ir[1]))
    report = check_root(root, progress=False)
    assert [(s.name, s.images, s.labeled, s.boxes) for s in report.sets] == [("test", 3, 3, 3), ("train", 6, 6, 6)]
    assert [p.message.split(" ")[0] for p in report.errors] == ["thermal"] and report.errors[0].line == 3
    assert "resized to the RGB size" in report.warnings[0].message
    assert report.stats_channels == ["rgb.R", "rgb.G", "rgb.B", "thermal"] and len(report.pixel_mean) == 4
    assert "Per-channel mean/std of the train pairs" in report.format()


def test_stored_ground_truth_of_a_pair(tmp_path):
    from cadet_d2.inference.ground_truth import stored_ground_truth

    root = pairs_root(tmp_path)
    cfg = pair_cfg(root, str(tmp_path / "o"))
    register_from_config(cfg)
    d = DatasetCatalog.get("synth_test")[0]
    image, boxes, classes = stored_ground_truth(cfg, d)
    assert image.shape == (H, W, 4) and boxes.shape == (1, 4) and classes.tolist() == [0]


def test_predict_reads_a_pairs_index_like_the_npy_it_equals(tmp_path):
    """tools/predict.py's inputs: a pairs.csv gives its pairs (lossless PNG); the detections equal
    those of the same images stacked into .npy files; pictures are named by the pairs' stems; a
    pair lacking a configured modality stops naming pairs.csv and its line."""
    from detectron2.modeling import build_model

    from cadet_d2.inference import BatchPredictor, collect_inputs, predict_files

    root = pairs_root(tmp_path, test_sets=(), rgb_ext=".png")
    cfg = pair_cfg(root, str(tmp_path / "o"), "MODEL.BACKBONE.NAME", "build_dual_mit_fpn_backbone",
                   "CADET.FUSION.NAME", "cssa", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", test_sets=())
    index = os.path.join(root, "train", "pairs.csv")
    pairs = collect_inputs([index])
    assert [p.stem for p in pairs] == [f"train{i:03d}" for i in range(6)]
    npy = str(tmp_path / "npy")
    os.makedirs(npy)
    for p in pairs:
        five = np.concatenate([cv2.imread(p.files["rgb"])[:, :, ::-1], cv2.imread(p.files["thermal"], 0)[:, :, None],
                               np.zeros((H, W, 1), np.uint8)], axis=2)  # rgb, thermal, event (unused)
        np.save(os.path.join(npy, p.stem + ".npy"), five)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    predictor = BatchPredictor(cfg, batch_size=4, model=model)
    from_pairs = predictor(pairs)
    from_npy = predictor(collect_inputs([npy]))
    assert sum(len(a) for a in from_pairs) > 0
    for a, b, p in zip(from_pairs, from_npy, pairs, strict=True):
        assert a.file_name == p.files["rgb"] and (a.height, a.width) == (H, W)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)

    out = str(tmp_path / "pred")
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(tmp_path / "w.pth")
    torch.save({"model": model.state_dict()}, cfg.MODEL.WEIGHTS)
    summary = predict_files(cfg, [index], out, vis=True, progress=False)
    assert summary["images"] == 6 and summary["pictures"] == 6
    assert sorted(os.listdir(os.path.join(out, "vis"))) == [f"train{i:03d}.png" for i in range(6)]

    bad = tmp_path / "bad.csv"
    bad.write_text(f"stem,rgb\nx,{pairs[0].files['rgb']}\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: pair x has no thermal file"):
        predictor(collect_inputs([str(bad)]))


def test_predict_inputs_of_image_files_point_to_pairs_csv(tmp_path):
    """tools/predict.py given an image file, a folder of them, or a set folder: the error says
    that paired files come through a pairs.csv (and which one, for a set)."""
    from cadet_d2.inference import collect_inputs

    root = pairs_root(tmp_path, test_sets=())
    raw = os.path.join(root, "raw_train")
    with pytest.raises(ValueError, match=r"raw_train: folder holds no \.npy image, only image files; paired image "
                                         r"files are read through a pairs\.csv index"):
        collect_inputs([raw])
    jpg = os.path.join(raw, sorted(f for f in os.listdir(raw) if f.endswith(".jpg"))[0])
    with pytest.raises(ValueError, match=r"\.jpg: not a \.npy image .*a one-pair index is the header 'stem,rgb,thermal'"):
        collect_inputs([jpg])
    with pytest.raises(ValueError, match=rf"a set of paired files\? give {os.path.join(root, 'train', 'pairs.csv')}"):
        collect_inputs([os.path.join(root, "train")])


def test_predict_inputs_keep_pairs_that_share_only_their_rgb_file(tmp_path):
    from cadet_d2.data.pairs import read_pairs_csv
    from cadet_d2.inference import collect_inputs

    root = pairs_root(tmp_path, test_sets=())
    a, b = read_pairs_csv(os.path.join(root, "train", "pairs.csv"))[:2]
    index = tmp_path / "shared_rgb.csv"
    index.write_text(f"stem,rgb,thermal\nx,{a.files['rgb']},{a.files['thermal']}\n"
                     f"y,{a.files['rgb']},{b.files['thermal']}\n")
    inputs = collect_inputs([str(index), str(index)])  # the same index twice: each pair once
    assert [p.stem for p in inputs] == ["x", "y"]


def test_set_whose_index_lacks_a_configured_modality_names_file_and_line(tmp_path):
    from cadet_d2.data.datasets import load_pair_dicts
    from cadet_d2.data.pairs import read_pairs_csv

    root = pairs_root(tmp_path, test_sets=())
    rgb = read_pairs_csv(os.path.join(root, "train", "pairs.csv"))[0].files["rgb"]
    index = tmp_path / "rgb_only.csv"
    index.write_text(f"stem,rgb\nx,{rgb}\n")
    with pytest.raises(DataError, match=r"rgb_only\.csv:2: pair x has no thermal file"):
        load_pair_dicts(read_pairs_csv(str(index)), str(tmp_path), str(tmp_path), 1, modalities=("rgb", "thermal"))


def test_a_pairs_set_is_read_again_when_a_file_it_names_changes(tmp_path, caplog):
    root = pairs_root(tmp_path)
    register_from_config(pair_cfg(root, str(tmp_path / "o")))
    old = time.time() - 60  # older than cadet_d2.data.memo.RACY_S: a read is kept
    for folder, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(folder, f), (old, old))
    with caplog.at_level(logging.INFO, logger="cadet_d2.data.datasets"):
        rgb = DatasetCatalog.get("synth_train")[0]["pair"]["rgb"]
        DatasetCatalog.get("synth_train")
        assert sum("synth_train" in r.getMessage() for r in caplog.records) == 1
        with open(rgb, "r+b") as f:  # a file outside the set's folder, named by pairs.csv
            f.truncate(os.path.getsize(rgb) // 2)
        with pytest.raises(DataError, match=re.escape(os.path.basename(rgb))):
            DatasetCatalog.get("synth_train")
