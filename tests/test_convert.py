"""Converters (cadet_d2/convert): tiny trees in each data set's layout written by the tests,
and the real samples of ../shared (beside the project root) when they exist."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from cadet_d2.convert.cli import main as convert_main
from cadet_d2.convert.m3fd import seeded_split
from cadet_d2.data.errors import DataError


# ---- helpers ---------------------------------------------------------------------------------

def write_img(path: str, size=(64, 48), channels: int = 3, value: int = 100) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w, h = size
    arr = np.full((h, w, channels) if channels > 1 else (h, w), value, dtype=np.uint8)
    if channels == 3:
        arr[..., 1] = value // 2
    Image.fromarray(arr).save(path)
    return path


def write_text(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def voc_xml(objects, size=(64, 48)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    return f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size>{objs}</annotation>"


def convert(dataset: str, src, out, *extra) -> dict:
    rc = convert_main([dataset, "--src", str(src), "--out", str(out), *extra])
    assert rc == 0
    with open(os.path.join(out, "convert_report.json"), encoding="utf-8") as f:
        return json.load(f)


def read_pairs(out, set_name) -> list[dict]:
    with open(os.path.join(out, set_name, "pairs.csv"), encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_labels(out, set_name, stem, kind="labels") -> list[list[float]]:
    with open(os.path.join(out, set_name, kind, stem + ".txt"), encoding="utf-8") as f:
        return [[float(v) for v in line.split()] for line in f if line.strip()]


def yolo(x0, y0, x1, y1, w, h):
    return [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]


def count(report, kind, reason) -> int:
    return report[kind].get(reason, {}).get("count", 0)


# ---- LLVIP -----------------------------------------------------------------------------------

@pytest.fixture
def llvip_tree(tmp_path):
    src = tmp_path / "LLVIP"
    for stem in ("010001", "010002", "010003"):
        write_img(str(src / "visible/train" / f"{stem}.jpg"))
    for stem in ("010001", "010002", "010004"):
        write_img(str(src / "infrared/train" / f"{stem}.jpg"), channels=1)
    write_img(str(src / "visible/train/010001.png"))  # same stem twice
    write_img(str(src / "visible/test/190001.jpg"))
    write_img(str(src / "infrared/test/190001.jpg"), channels=1)
    write_text(str(src / "Annotations/010001.xml"), voc_xml(
        [("person", 10, 5, 30, 40), ("dog", 1, 1, 5, 5), ("person", 50, 10, 70, 50), ("person", 80, 10, 90, 20)]))
    write_text(str(src / "Annotations/010002.xml"), "")
    write_text(str(src / "Annotations/010009.xml"), voc_xml([("person", 1, 1, 5, 5)]))
    return src


def test_llvip_pairs_boxes_and_mess(llvip_tree, tmp_path):
    out = tmp_path / "out"
    rep = convert("llvip", llvip_tree, out)
    assert open(out / "classes.txt").read() == "person\n"
    rows = read_pairs(out, "train")
    assert [r["stem"] for r in rows] == ["010001", "010002"]
    assert rows[0]["rgb"] == str(llvip_tree / "visible/train/010001.jpg")
    assert rows[0]["thermal"] == str(llvip_tree / "infrared/train/010001.jpg")
    # box 1 as is; box 2 clipped to the 64x48 image; the dog and the box wholly outside dropped
    assert np.allclose(read_labels(out, "train", "010001"),
                       [[0] + yolo(10, 5, 30, 40, 64, 48), [0] + yolo(50, 10, 64, 48, 64, 48)], atol=1e-6)
    assert read_labels(out, "train", "010002") == []  # empty XML file: labeled, no objects
    assert not (out / "test/labels/190001.txt").exists()  # test without XML: unlabeled
    assert [r["stem"] for r in read_pairs(out, "test")] == ["190001"]
    assert count(rep, "skipped_pairs", "missing thermal image") == 1
    assert count(rep, "skipped_pairs", "missing RGB image") == 1
    assert count(rep, "skipped_pairs", "duplicate stem (second file not used)") == 1
    assert count(rep, "notes", "box of unknown class 'dog' dropped") == 1
    assert count(rep, "notes", "box outside the image clipped") == 1
    assert count(rep, "notes", "box wholly outside the image dropped") == 1
    assert count(rep, "notes", "empty annotation file (kept as an image without objects)") == 1
    assert count(rep, "notes", "test: no annotation file (pair written unlabeled)") == 1
    assert count(rep, "notes", "annotation file without an image pair (not used)") == 1
    assert rep["sets"]["train"]["boxes"] == {"person": 2}
    assert rep["sets"]["test"] == {"pairs": 1, "labeled": 0, "unlabeled": 1, "without_objects": 0,
                                   "boxes": {"person": 0}, "ignore_boxes": 0}


def test_llvip_drop_policy_relative_paths_and_overwrite(llvip_tree, tmp_path, capsys):
    out = tmp_path / "out"
    rep = convert("llvip", llvip_tree, out, "--boxes-outside", "drop", "--relative-paths")
    assert np.allclose(read_labels(out, "train", "010001"), [[0] + yolo(10, 5, 30, 40, 64, 48)], atol=1e-6)
    assert count(rep, "notes", "box outside the image dropped") == 2
    row = read_pairs(out, "train")[0]
    assert not os.path.isabs(row["rgb"])
    assert os.path.samefile(os.path.join(out, "train", row["rgb"]), llvip_tree / "visible/train/010001.jpg")
    assert convert_main(["llvip", "--src", str(llvip_tree), "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    convert("llvip", llvip_tree, out, "--overwrite")
    other = tmp_path / "other"
    write_text(str(other / "keep.txt"), "x")
    assert convert_main(["llvip", "--src", str(llvip_tree), "--out", str(other), "--overwrite"]) == 1
    assert (other / "keep.txt").exists()


def test_voc_difficult_object_is_an_ignore_region(tmp_path):
    src = tmp_path / "LLVIP"
    write_img(str(src / "visible/train/010001.jpg"))
    write_img(str(src / "infrared/train/010001.jpg"), channels=1)
    xml = voc_xml([("person", 10, 5, 30, 40), ("person", 40, 10, 60, 40)])
    write_text(str(src / "Annotations/010001.xml"), xml.replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    rep = convert("llvip", src, tmp_path / "out")
    assert np.allclose(read_labels(tmp_path / "out", "train", "010001"), [[0] + yolo(40, 10, 60, 40, 64, 48)])
    assert np.allclose(read_labels(tmp_path / "out", "train", "010001", "ignore"), [[0] + yolo(10, 5, 30, 40, 64, 48)])
    assert count(rep, "notes", "difficult box stored as ignore region") == 1
    assert rep["sets"]["train"]["ignore_boxes"] == 1


def test_llvip_bad_xml_names_file_and_line(llvip_tree, tmp_path):
    from cadet_d2.convert import Report, convert_llvip

    bad = write_text(str(llvip_tree / "Annotations/010001.xml"), "<annotation>\n<object>\n</annotation>")
    with pytest.raises(DataError, match=rf"{bad}:3: not valid XML"):
        convert_llvip(str(llvip_tree), Report("LLVIP", str(llvip_tree)))
    write_text(bad, voc_xml([("person", 1, 1, "x", 5)]))
    with pytest.raises(DataError, match=rf"{bad}: object 1 \(person\): bndbox/xmax is 'x'"):
        convert_llvip(str(llvip_tree), Report("LLVIP", str(llvip_tree)))


def test_to_npy(llvip_tree, tmp_path):
    out = tmp_path / "npy"
    write_img(str(llvip_tree / "infrared/train/010002.jpg"), size=(32, 24), channels=1, value=200)
    rep = convert("llvip", llvip_tree, out, "--to-npy")
    arr = np.load(out / "train/images/010001.npy")
    assert arr.shape == (48, 64, 4) and arr.dtype == np.uint8
    assert abs(int(arr[..., 0].mean()) - 100) <= 2 and abs(int(arr[..., 1].mean()) - 50) <= 2
    assert abs(int(arr[..., 3].mean()) - 100) <= 2
    assert np.load(out / "train/images/010002.npy").shape == (48, 64, 4)
    assert count(rep, "notes", "thermal resized to the RGB size") == 1
    assert count(rep, "notes", "thermal size differs from the RGB size") == 1
    assert not (out / "train/pairs.csv").exists()


def test_to_npy_reads_thermal_as_training_reads_paired_files(llvip_tree, tmp_path):
    """--to-npy's thermal is what training reads from the same file with the default
    CADET.INPUT.THERMAL_PERCENTILES: colour refused with the file named, 16-bit scaled alike."""
    from cadet_d2.config import add_cadet_config
    from cadet_d2.convert.npy import read_thermal
    from cadet_d2.data.images import read_grey
    from detectron2.config import get_cfg

    path = str(llvip_tree / "infrared/train/010001.png")
    Image.fromarray(np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 90, 200)])).save(path)
    with pytest.raises(DataError, match=rf"{path}: 3-channel image whose channels differ"):
        read_thermal(path)
    p16 = str(llvip_tree / "t16.png")
    Image.fromarray(np.arange(400, dtype=np.uint16).reshape(20, 20) * 100).save(p16)
    t = read_thermal(p16)
    assert t.dtype == np.uint8 and t.min() == 0 and t.max() == 255
    percentiles = add_cadet_config(get_cfg()).CADET.INPUT.THERMAL_PERCENTILES
    assert np.array_equal(t, read_grey(p16, percentiles=percentiles))


# ---- FLIR ------------------------------------------------------------------------------------

def coco_json(images, annotations, categories=("person", "bike", "car")) -> str:
    return json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in images],
        "annotations": [{"id": n, "image_id": i, "category_id": c, "bbox": b, "iscrowd": crowd}
                        for n, (i, c, b, crowd) in enumerate(annotations)],
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(categories)],
    })


@pytest.fixture
def flir_coco_tree(tmp_path):
    src = tmp_path / "FLIR"
    ids = ["FLIR_00001", "FLIR_00002", "FLIR_00003"]
    for i in ids:
        write_img(str(src / "images_thermal_train/data" / f"{i}_PreviewData.jpg"), channels=1)
    for i in ids[:2]:
        write_img(str(src / "images_rgb_train/data" / f"{i}_RGB.jpg"))
    anns = [("FLIR_00001_PreviewData", 1, [2, 3, 10, 20], 0), ("FLIR_00001_PreviewData", 3, [-1, 0, 11, 10], 0),
            ("FLIR_00001_PreviewData", 4, [5, 5, 5, 5], 0), ("FLIR_00002_PreviewData", 2, [1, 1, 4, 4], 1),
            ("FLIR_00099_PreviewData", 1, [1, 1, 4, 4], 0)]
    images = [f"{i}_PreviewData" for i in ids]
    meta = src / "meta/thermal"
    cats = ("person", "bike", "car", "dog")
    write_text(str(meta / "flir_train.json"), coco_json(images, anns, cats))
    write_text(str(meta / "day_flir_train.json"), coco_json(images[:1], anns[:3], cats))
    write_text(str(meta / "night_flir_train.json"), coco_json(images[1:2], anns[3:4], cats))
    return src


def test_flir_coco(flir_coco_tree, tmp_path):
    out = tmp_path / "out"
    rep = convert("flir", flir_coco_tree, out)
    assert open(out / "classes.txt").read().split() == ["person", "bike", "car"]
    assert [r["stem"] for r in read_pairs(out, "train")] == ["FLIR_00001", "FLIR_00002"]
    assert read_pairs(out, "train")[0]["rgb"].endswith("images_rgb_train/data/FLIR_00001_RGB.jpg")
    assert np.allclose(read_labels(out, "train", "FLIR_00001"),
                       [[0] + yolo(2, 3, 12, 23, 64, 48), [2] + yolo(0, 0, 10, 10, 64, 48)], atol=1e-6)
    assert read_labels(out, "train", "FLIR_00002") == []
    assert np.allclose(read_labels(out, "train", "FLIR_00002", "ignore"), [[1] + yolo(1, 1, 5, 5, 64, 48)], atol=1e-6)
    assert [r["stem"] for r in read_pairs(out, "train_day")] == ["FLIR_00001"]
    assert [r["stem"] for r in read_pairs(out, "train_night")] == ["FLIR_00002"]
    assert count(rep, "skipped_pairs", "missing RGB image") == 1
    assert count(rep, "notes", "box of unknown class 'dog' dropped") == 2  # train + train_day
    assert count(rep, "notes", "iscrowd/ignore box stored as ignore region") == 2
    assert count(rep, "notes", "annotation of an image the JSON does not list (not used)") == 1
    assert rep["sets"]["train"]["boxes"] == {"person": 1, "bike": 0, "car": 1}


def test_flir_coco_day_image_outside_its_split_is_counted_not_used(flir_coco_tree, tmp_path):
    """day/night sets are parts of their split (test_day within test), as in the VOC layout."""
    write_img(str(flir_coco_tree / "images_thermal_train/data/FLIR_00004_PreviewData.jpg"), channels=1)
    write_img(str(flir_coco_tree / "images_rgb_train/data/FLIR_00004_RGB.jpg"))
    write_text(str(flir_coco_tree / "meta/thermal/day_flir_train.json"),
               coco_json(["FLIR_00001_PreviewData", "FLIR_00004_PreviewData"], []))
    rep = convert("flir", flir_coco_tree, tmp_path / "out")
    assert [r["stem"] for r in read_pairs(tmp_path / "out", "train_day")] == ["FLIR_00001"]
    assert rep["notes"]["image of day_flir_train.json not in flir_train.json (not used)"]["examples"] == ["FLIR_00004"]


def test_flir_boxes_are_normalised_to_the_thermal_image(flir_coco_tree, tmp_path):
    write_img(str(flir_coco_tree / "images_rgb_train/data/FLIR_00001_RGB.jpg"), size=(128, 96))
    rep = convert("flir", flir_coco_tree, tmp_path / "out")
    assert np.allclose(read_labels(tmp_path / "out", "train", "FLIR_00001")[0], [0] + yolo(2, 3, 12, 23, 64, 48))
    assert count(rep, "notes", "thermal size differs from the RGB size") == 2  # train + train_day


def test_flir_bad_json_names_file_and_line(flir_coco_tree):
    from cadet_d2.convert import Report, convert_flir

    bad = write_text(str(flir_coco_tree / "meta/thermal/flir_train.json"), '{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DataError, match=rf"{bad}:2: not valid JSON"):
        convert_flir(str(flir_coco_tree), Report("FLIR", str(flir_coco_tree)))
    write_text(bad, '{"images": []}')
    with pytest.raises(DataError, match=rf"{bad}: no 'annotations' list"):
        convert_flir(str(flir_coco_tree), Report("FLIR", str(flir_coco_tree)))


def make_flir_voc(coco_src, dst, split="train", test_split="validation") -> str:
    """The VOC layout (JPEGImages/*.jpeg + *_RGB.jpg, Annotations/*.xml, align_<split>.txt) of a
    FLIR COCO tree's train part; its day/night JSONs become the day/night id lists of the
    ``test_split`` too (the same pairs listed as a second split)."""
    meta = os.path.join(coco_src, "meta", "thermal")
    data = json.load(open(os.path.join(meta, f"flir_{split}.json")))
    cats = {c["id"]: c["name"] for c in data["categories"]}
    os.makedirs(os.path.join(dst, "JPEGImages"), exist_ok=True)
    ids = []
    for im in data["images"]:
        stem = im["file_name"].replace("_PreviewData.jpg", "")
        thermal = os.path.join(coco_src, f"images_thermal_{split}", "data", im["file_name"])
        rgb = os.path.join(coco_src, f"images_rgb_{split}", "data", stem + "_RGB.jpg")
        if not (os.path.isfile(thermal) and os.path.isfile(rgb)):
            continue
        os.symlink(thermal, os.path.join(dst, "JPEGImages", stem + "_PreviewData.jpeg"))
        os.symlink(rgb, os.path.join(dst, "JPEGImages", stem + "_RGB.jpg"))
        objs = [(cats[a["category_id"]], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                 a["bbox"][1] + a["bbox"][3]) for a in data["annotations"]
                if a["image_id"] == im["id"] and not a.get("iscrowd")]
        write_text(os.path.join(dst, "Annotations", stem + "_PreviewData.xml"), voc_xml(objs, (im["width"], im["height"])))
        ids.append(stem)
    write_text(os.path.join(dst, f"align_{split}.txt"), "".join(i + "\n" for i in ids))
    write_text(os.path.join(dst, f"align_{test_split}.txt"), "".join(i + "_PreviewData\n" for i in ids))
    for part in ("day", "night"):
        path = os.path.join(meta, f"{part}_flir_{split}.json")
        if os.path.isfile(path):
            part_ids = [im["file_name"].replace("_PreviewData.jpg", "") for im in json.load(open(path))["images"]]
            write_text(os.path.join(dst, f"align_{test_split}_{part}.txt"), "".join(i + "\n" for i in part_ids))
    return str(dst)


def test_flir_voc_matches_coco(flir_coco_tree, tmp_path):
    voc = make_flir_voc(str(flir_coco_tree), str(tmp_path / "voc"))
    rep_c = convert("flir", flir_coco_tree, tmp_path / "c")
    rep_v = convert("flir", voc, tmp_path / "v")
    assert rep_v["sets"]["train"]["boxes"] == rep_c["sets"]["train"]["boxes"]
    assert read_labels(tmp_path / "v", "train", "FLIR_00001") == read_labels(tmp_path / "c", "train", "FLIR_00001")
    assert [r["stem"] for r in read_pairs(tmp_path / "v", "test_day")] == ["FLIR_00001"]
    assert [r["stem"] for r in read_pairs(tmp_path / "v", "test_night")] == ["FLIR_00002"]
    assert read_pairs(tmp_path / "v", "train")[0]["thermal"].endswith("FLIR_00001_PreviewData.jpeg")
    bad = write_text(os.path.join(voc, "align_train.txt"), "FLIR_00001\nnot-an-id\n")
    assert convert_main(["flir", "--src", voc, "--out", str(tmp_path / "v2")]) == 1
    from cadet_d2.convert.flir import read_id_list
    with pytest.raises(DataError, match=rf"{bad}:2: expected an id"):
        read_id_list(bad)


# ---- KAIST -----------------------------------------------------------------------------------

BBGT = "% bbGt version=3\n"


@pytest.fixture
def kaist_tree(tmp_path):
    """The official tree: setXX/VYYY/{visible,lwir}/ with annotations beside the images."""
    src = tmp_path / "kaist"
    size = (640, 512)
    frames = {"set00/V000/I00001": BBGT + "person 100 100 30 80 0 0 0 0 0 0 0\n",
              "set06/V000/I00002": BBGT + "person 100 100 30 80 1 0 0 0 0 0 0\n"
                                           "person 200 100 20 40 0 0 0 0 0 0 0\n"     # < 55 px
                                           "person 300 100 30 80 2 0 0 0 0 0 0\n"     # heavy occlusion
                                           "person 2 100 30 80 0 0 0 0 0 0 0\n"       # at the border
                                           "people 400 100 60 80 0 0 0 0 0 0 0\n"
                                           "cyclist 450 100 30 80 0 0 0 0 0 0 0\n"
                                           "person? 500 100 30 80 0 0 0 0 0 0 0\n"
                                           "dog 10 10 5 5 0 0 0 0 0 0 0\n",
              "set09/V001/I00003": BBGT,
              "set10/V000/I00004": ""}
    for frame, text in frames.items():
        s, v, i = frame.split("/")
        write_img(str(src / s / v / "visible" / f"{i}.jpg"), size)
        write_img(str(src / s / v / "lwir" / f"{i}.jpg"), size, channels=1)
        write_text(str(src / s / v / f"{i}.txt"), text)
    write_img(str(src / "set11/V000/visible/I00005.jpg"), size)  # no lwir partner
    write_img(str(src / "set11/V000/lwir/I00006.png"), size, channels=1)  # unlabeled pair
    write_img(str(src / "set11/V000/visible/I00006.png"), size)
    return src


def test_kaist_official_tree(kaist_tree, tmp_path):
    out = tmp_path / "out"
    rep = convert("kaist", kaist_tree, out)
    assert [r["stem"] for r in read_pairs(out, "train")] == ["set00_V000_I00001"]
    assert [r["stem"] for r in read_pairs(out, "test")] == ["set06_V000_I00002", "set09_V001_I00003",
                                                           "set10_V000_I00004", "set11_V000_I00006"]
    assert [r["stem"] for r in read_pairs(out, "test_day")] == ["set06_V000_I00002"]
    assert [r["stem"] for r in read_pairs(out, "test_night")] == ["set09_V001_I00003", "set10_V000_I00004",
                                                                 "set11_V000_I00006"]
    W, H = 640, 512
    assert np.allclose(read_labels(out, "test", "set06_V000_I00002"), [[0] + yolo(100, 100, 130, 180, W, H) + [1]],
                       atol=1e-6)
    ignore = read_labels(out, "test", "set06_V000_I00002", "ignore")
    assert np.allclose(ignore, [[0] + yolo(*b, W, H) for b in [(200, 100, 220, 140), (300, 100, 330, 180),
                                                               (2, 100, 32, 180), (400, 100, 460, 180),
                                                               (450, 100, 480, 180), (500, 100, 530, 180)]], atol=1e-6)
    assert read_labels(out, "test", "set09_V001_I00003") == []
    assert read_labels(out, "test", "set10_V000_I00004") == []
    assert not (out / "test/labels/set11_V000_I00006.txt").exists()
    assert count(rep, "notes", "person outside the reasonable setting stored as ignore region") == 3
    assert count(rep, "notes", "people box stored as ignore region") == 1
    assert count(rep, "notes", "box of unknown label 'dog' dropped") == 1
    assert count(rep, "notes", "empty annotation file (kept as an image without objects)") == 1
    assert count(rep, "skipped_pairs", "missing thermal image") == 1
    assert rep["sets"]["test_day"]["ignore_boxes"] == 6
    rep_all = convert("kaist", kaist_tree, tmp_path / "all", "--setting", "all")
    assert rep_all["sets"]["test"]["boxes"] == {"person": 4}
    assert len(read_labels(tmp_path / "all", "test", "set06_V000_I00002", "ignore")) == 3
    # each frame's bbGt file, as it is, for the miss rate (whatever the setting); none without one
    for root in (out, tmp_path / "all"):
        for s in ("test", "test_day"):
            assert (root / s / "bbgt" / "set06_V000_I00002.txt").read_bytes() == \
                (kaist_tree / "set06" / "V000" / "I00002.txt").read_bytes()
        assert (root / "train" / "bbgt" / "set00_V000_I00001.txt").is_file()
        assert not (root / "test" / "bbgt" / "set11_V000_I00006.txt").exists()


def test_kaist_lists_and_sample_style_tree(kaist_tree, tmp_path):
    """images/ + annotations/ trees (the shared sample's) and image-set lists."""
    src = tmp_path / "k2"
    os.makedirs(src / "annotations/set06/V000")
    os.rename(kaist_tree, src / "images")
    os.rename(src / "images/set06/V000/I00002.txt", src / "annotations/set06/V000/I00002.txt")
    lst = write_text(str(tmp_path / "test.txt"), "set06/V000/I00002\nset07/V000/I00009\n")
    rep = convert("kaist", src, tmp_path / "out", "--test-list", lst)
    assert [r["stem"] for r in read_pairs(tmp_path / "out", "test")] == ["set06_V000_I00002"]
    assert rep["sets"]["test"]["boxes"] == {"person": 1}
    assert count(rep, "skipped_pairs", "frame of the test list not found") == 1
    write_text(lst, "set06/V000/I00002\nI00009\n")
    assert convert_main(["kaist", "--src", str(src), "--out", str(tmp_path / "o2"), "--test-list", lst]) == 1


def test_kaist_bad_annotation_names_file_and_line(tmp_path):
    from cadet_d2.convert.kaist import read_bbgt

    p = write_text(str(tmp_path / "a.txt"), BBGT + "person 1 2 3 4 0\nperson 1 2 x 4 0\n")
    with pytest.raises(DataError, match=rf"{p}:3: non-numeric"):
        read_bbgt(p)
    write_text(p, BBGT + "person 1 2 3\n")
    with pytest.raises(DataError, match=rf"{p}:2: expected 'label left top"):
        read_bbgt(p)
    write_text(p, BBGT + "person 1 2 3 4 7\n")
    with pytest.raises(DataError, match=rf"{p}:2: occlusion level 7"):
        read_bbgt(p)
    write_text(p, "person 1 2 3 4 0\n")
    with pytest.raises(DataError, match=rf"{p}:1: first line"):
        read_bbgt(p)


def test_kaist_ign_flag_makes_an_ignore_region(tmp_path):
    """bbGt's 11th field ``ign`` = 1 marks a box ignored (the toolbox's bbLoad reads it): an
    ignore region in both settings, counted with its line; a flag other than 0/1 names the line."""
    src = tmp_path / "kaist"
    write_img(str(src / "set06/V000/visible/I00001.jpg"), (640, 512))
    write_img(str(src / "set06/V000/lwir/I00001.jpg"), (640, 512), channels=1)
    ann = write_text(str(src / "set06/V000/I00001.txt"), BBGT + "person 100 100 30 80 0 0 0 0 0 0 0\n"
                     "person 200 100 30 80 0 0 0 0 0 1 0\n" "person 300 100 30 80 0\n")
    for setting in ("reasonable", "all"):
        out = tmp_path / setting
        rep = convert("kaist", src, out, "--setting", setting)
        assert np.allclose(read_labels(out, "test", "set06_V000_I00001"),
                           [[0] + yolo(100, 100, 130, 180, 640, 512) + [0], [0] + yolo(300, 100, 330, 180, 640, 512) + [0]],
                           atol=1e-6)
        assert np.allclose(read_labels(out, "test", "set06_V000_I00001", "ignore"),
                           [[0] + yolo(200, 100, 230, 180, 640, 512)], atol=1e-6)
        assert rep["notes"]["person box with ign flag 1 stored as ignore region"]["examples"][0].endswith("I00001.txt:3")
    write_text(ann, BBGT + "person 200 100 30 80 0 0 0 0 0 2 0\n")
    from cadet_d2.convert.kaist import read_bbgt

    with pytest.raises(DataError, match=rf"{ann}:2: ign flag \(11th field\) '2' is not 0 or 1"):
        read_bbgt(ann)


def test_kaist_xml_annotations_stop_instead_of_an_unlabeled_set(tmp_path):
    """XML annotations where bbGt text files are expected would leave every frame unlabeled."""
    src = tmp_path / "kaist"
    write_img(str(src / "images/set06/V000/visible/I00001.jpg"), (640, 512))
    write_img(str(src / "images/set06/V000/lwir/I00001.jpg"), (640, 512), channels=1)
    xml = write_text(str(src / "annotations/set06/V000/I00001.xml"), "<annotation></annotation>")
    with pytest.raises(DataError, match=rf"{xml}: a VOC-style XML annotation .* give their folder with --annotations"):
        from cadet_d2.convert.kaist import convert_kaist
        from cadet_d2.convert.report import Report

        convert_kaist(str(src), Report("KAIST", str(src)))
    assert convert_main(["kaist", "--src", str(src), "--out", str(tmp_path / "out")]) != 0


# ---- M3FD ------------------------------------------------------------------------------------

def test_m3fd_seeded_split_and_classes(tmp_path):
    src = tmp_path / "M3FD"
    det = src / "M3FD_Detection"
    stems = [f"{i:05d}" for i in range(10)]
    for s in stems:
        write_img(str(det / "Vis" / f"{s}.png"))
        write_img(str(det / "Ir" / f"{s}.png"), channels=1)
        write_text(str(det / "Annotation" / f"{s}.xml"),
                   voc_xml([("People", 1, 1, 9, 20), ("Truck", 10, 10, 40, 30), ("Tree", 1, 1, 3, 3)]))
    rep = convert("m3fd", src, tmp_path / "out", "--test-fraction", "0.3", "--seed", "7")
    out = tmp_path / "out"
    assert open(out / "classes.txt").read().split() == ["People", "Car", "Bus", "Lamp", "Motorcycle", "Truck"]
    train, test = [r["stem"] for r in read_pairs(out, "train")], [r["stem"] for r in read_pairs(out, "test")]
    assert (train, test) == seeded_split(stems, 0.3, 7) and len(test) == 3 and not set(train) & set(test)
    assert seeded_split(stems, 0.3, 8) != (train, test)
    assert np.allclose(read_labels(out, "train", train[0]),
                       [[0] + yolo(1, 1, 9, 20, 64, 48), [5] + yolo(10, 10, 40, 30, 64, 48)], atol=1e-6)
    assert count(rep, "notes", "box of unknown class 'Tree' dropped") == 10
    assert rep["sets"]["test"]["boxes"]["Truck"] == 3
    convert("m3fd", det, tmp_path / "out2", "--test-fraction", "0.3", "--seed", "7")  # M3FD_Detection itself
    assert [r["stem"] for r in read_pairs(tmp_path / "out2", "test")] == test


def test_not_a_tree_says_what_is_expected(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for name, expected in [("llvip", "visible/"), ("flir", "meta/thermal"), ("kaist", "setXX/VYYY"),
                           ("m3fd", "M3FD_Detection")]:
        assert convert_main([name, "--src", str(tmp_path / "empty"), "--out", str(tmp_path / name)]) == 1
        assert expected in capsys.readouterr().err


# ---- the real samples (../shared/data/rgbt-samples from the project root) ---------------------------------------

def find_samples() -> str | None:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(here, "..", "shared", "data", "rgbt-samples")
    return os.path.abspath(path) if os.path.isdir(path) else None


SAMPLES = find_samples()
needs_samples = pytest.mark.skipif(SAMPLES is None, reason="no shared/data/rgbt-samples beside the repository")


def _all_rows(out) -> dict:
    return {s: read_pairs(out, s) for s in sorted(os.listdir(out)) if os.path.isfile(os.path.join(out, s, "pairs.csv"))}


def _label_count(out, set_name, kind="labels") -> int:
    folder = os.path.join(out, set_name, kind)
    if not os.path.isdir(folder):
        return 0
    return sum(len(read_labels(out, set_name, f[:-4], kind)) for f in os.listdir(folder))


@needs_samples
def test_sample_llvip(tmp_path):
    import xml.etree.ElementTree as ET

    src = os.path.join(SAMPLES, "LLVIP")
    rep = convert("llvip", src, tmp_path / "out")
    rows = _all_rows(tmp_path / "out")
    for split in ("train", "test"):
        stems = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(src, "visible", split)))
        assert [r["stem"] for r in rows[split]] == stems
    xml_boxes = sum(len(ET.parse(os.path.join(src, "Annotations", f)).findall("object"))
                    for f in os.listdir(os.path.join(src, "Annotations")))
    assert _label_count(tmp_path / "out", "train") == xml_boxes == rep["sets"]["train"]["boxes"]["person"]
    assert rep["sets"]["test"]["unlabeled"] == len(rows["test"]) == 9
    assert not rep["skipped_pairs"]


@needs_samples
def test_sample_flir_coco_and_voc(tmp_path):
    src = os.path.join(SAMPLES, "FLIR_aligned_coco")
    rep = convert("flir", src, tmp_path / "out")
    rows = _all_rows(tmp_path / "out")
    assert sorted(rows) == ["train", "train_day", "train_night"]
    for set_name, name in [("train", "flir_train"), ("train_day", "day_flir_train"), ("train_night", "night_flir_train")]:
        data = json.load(open(os.path.join(src, "meta", "thermal", name + ".json")))
        assert sorted(r["stem"] for r in rows[set_name]) == sorted(
            im["file_name"].replace("_PreviewData.jpg", "") for im in data["images"])
        by_class = {c["name"]: sum(a["category_id"] == c["id"] for a in data["annotations"]) for c in data["categories"]}
        assert rep["sets"][set_name]["boxes"] == by_class
        assert _label_count(tmp_path / "out", set_name) == len(data["annotations"])
    # the VOC layout most users have, built from the sample's own files
    voc = make_flir_voc(src, str(tmp_path / "voc"))
    rep_v = convert("flir", voc, tmp_path / "v")
    assert rep_v["sets"]["train"]["boxes"] == rep["sets"]["train"]["boxes"]
    assert rep_v["sets"]["test_day"]["pairs"] == rep["sets"]["train_day"]["pairs"] == 20
    for r in rows["train"][:5]:
        assert np.allclose(read_labels(tmp_path / "v", "train", r["stem"]),
                           read_labels(tmp_path / "out", "train", r["stem"]), atol=2e-6)


@needs_samples
def test_sample_kaist(tmp_path):
    src = os.path.join(SAMPLES, "KAIST")
    rep = convert("kaist", src, tmp_path / "out")
    rows = _all_rows(tmp_path / "out")
    assert sorted(rows) == ["test", "test_day", "test_night"]  # the sample has test sets only
    objects = {}
    for dirpath, _, files in os.walk(os.path.join(src, "annotations")):
        for f in files:
            lines = open(os.path.join(dirpath, f)).read().splitlines()[1:]
            s, v = dirpath.split(os.sep)[-2:]
            objects[f"{s}_{v}_{f[:-4]}"] = [line.split() for line in lines if line.strip()]
    assert sorted(r["stem"] for r in rows["test"]) == sorted(objects)
    assert {r["stem"][:5] for r in rows["test_day"]} <= {"set06", "set07", "set08"}
    assert {r["stem"][:5] for r in rows["test_night"]} <= {"set09", "set10", "set11"}
    assert len(rows["test_day"]) + len(rows["test_night"]) == len(rows["test"])
    total = sum(len(o) for o in objects.values())
    assert _label_count(tmp_path / "out", "test") + _label_count(tmp_path / "out", "test", "ignore") == total
    reasonable = sum(1 for o in objects.values() for f in o
                     if f[0] == "person" and float(f[4]) >= 55 and int(f[5]) < 2
                     and float(f[1]) >= 5 and float(f[2]) >= 5 and float(f[1]) + float(f[3]) <= 635
                     and float(f[2]) + float(f[4]) <= 507)
    assert rep["sets"]["test"]["boxes"]["person"] == reasonable


@needs_samples
def test_sample_m3fd(tmp_path):
    import xml.etree.ElementTree as ET

    src = os.path.join(SAMPLES, "M3FD")
    rep = convert("m3fd", src, tmp_path / "out", "--test-fraction", "0")
    objs = ET.parse(os.path.join(src, "M3FD_Detection", "Annotation", "00471.xml")).findall("object")
    names = [o.findtext("name") for o in objs]
    assert rep["sets"]["train"]["boxes"] == {c: names.count(c) for c in
                                             ["People", "Car", "Bus", "Lamp", "Motorcycle", "Truck"]}
    assert [r["stem"] for r in read_pairs(tmp_path / "out", "train")] == ["00471"]
    assert _label_count(tmp_path / "out", "train") == len(objs)


@needs_samples
def test_sample_truncated_jpeg_is_caught_before_training(tmp_path):
    """A real LLVIP JPEG cut short decodes in OpenCV without an error (its last rows grey): the
    converter skips the pair (counted, named), check_data reports it, registration stops on it."""
    import shutil

    from cadet_d2.data.check import check_root

    src = tmp_path / "LLVIP"
    for part in ("visible/train", "infrared/train"):
        os.makedirs(src / part)
        for stem in ("010001", "010002"):
            shutil.copy(os.path.join(SAMPLES, "LLVIP", part, stem + ".jpg"), src / part)
    shutil.copytree(os.path.join(SAMPLES, "LLVIP", "Annotations"), src / "Annotations")
    rep = convert("llvip", src, tmp_path / "good")
    cut = str(src / "visible/train/010001.jpg")
    data = open(cut, "rb").read()
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 2])
    assert count(rep, "skipped_pairs", "unreadable image") == 0
    rep = convert("llvip", src, tmp_path / "out")
    assert count(rep, "skipped_pairs", "unreadable image") == 1
    assert "010001.jpg: truncated image" in rep["skipped_pairs"]["unreadable image"]["examples"][0]
    assert [r["stem"] for r in read_pairs(tmp_path / "out", "train")] == ["010002"]
    problems = [p for p in check_root(str(tmp_path / "good"), progress=False).errors if p.path.endswith("010001.jpg")]
    assert len(problems) == 1 and "truncated image" in problems[0].message


@needs_samples
def test_sample_kaist_pictures_label_ignore_regions(tmp_path, monkeypatch):
    """tools/visualize_data.py on the converted KAIST sample: its 8 ignore regions (people, small
    or occluded persons) are drawn as "ignore", not as the 8 persons it is trained on."""
    import cadet_d2.inference.ground_truth as gt
    from cadet_d2.engine import load_config

    convert("kaist", os.path.join(SAMPLES, "KAIST"), tmp_path / "out")
    cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   "configs/datasets/kaist/frm_ffm_mit_b1.yaml"),
                      ["CADET.DATA.ROOT", str(tmp_path / "out"), "CADET.DATA.TEST_SETS", "['test_day']",
                       "CADET.DATA.TRAIN_SET", "test", "CADET.BACKBONE.PRETRAINED", ""])
    drawn = {}
    monkeypatch.setattr(gt, "save_detections", lambda path, image, slices, boxes, classes, scores, names:
                        drawn.setdefault(os.path.basename(path), [names[c] for c in classes]))
    gt.draw_dataset(cfg, "kaist_test_day", str(tmp_path / "vis"), num=0)
    labels = drawn["set08_V001_I02559.png"]
    assert labels.count("person") == 8 and labels.count("ignore") == 8
    assert drawn["set07_V002_I01379.png"] == ["person", "person"]
