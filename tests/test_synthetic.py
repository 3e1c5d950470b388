"""The synthetic day/night generator: determinism, layout, day/night statistics, CLI."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cadet_d2.data.synthetic import area_bucket, image_rng, make_synthetic_dataset, render_scene, yolo_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"num_images": 20, "num_day_test": 6, "num_night_test": 6}
SET_DIRS = {"main": "", "daytest1": "daytest1", "nighttest1": "nighttest1"}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("synth") / "root")
    return out, make_synthetic_dataset(out, seed=0, **SMALL)


def _all_files(root: str) -> dict[str, bytes]:
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def _labels(path: str) -> list[list[str]] | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f.read().splitlines()]


def _samples(root: str, set_name: str):
    """(stem, image, label rows or None) of one set, sorted by stem."""
    folder = os.path.join(root, SET_DIRS[set_name])
    for name in sorted(os.listdir(os.path.join(folder, "images"))):
        stem = name[:-4]
        image = np.load(os.path.join(folder, "images", name), allow_pickle=False)
        yield stem, image, _labels(os.path.join(folder, "labels", stem + ".txt"))


def _pixel_boxes(rows: list[list[str]], h: int, w: int) -> list[tuple[int, int, int, int, int]]:
    boxes = []
    for c, xc, yc, bw, bh in rows:
        xc, yc, bw, bh = float(xc) * w, float(yc) * h, float(bw) * w, float(bh) * h
        boxes.append((int(c), round(xc - bw / 2), round(yc - bh / 2), round(xc + bw / 2), round(yc + bh / 2)))
    return boxes


def _box_mask(boxes: list, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    for _, x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


# ---- determinism ---------------------------------------------------------------------------------

def test_same_arguments_give_identical_bytes(small_root, tmp_path):
    root, _ = small_root
    again = str(tmp_path / "again")
    make_synthetic_dataset(again, seed=0, **SMALL)
    first, second = _all_files(root), _all_files(again)
    assert len(first) > 40
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


def test_other_seed_gives_other_images(small_root, tmp_path):
    root, _ = small_root
    other = str(tmp_path / "other")
    make_synthetic_dataset(other, seed=1, num_images=4, num_day_test=1, num_night_test=1)
    for rel in ("images/synth_000000.npy", "images/synth_000003.npy", "daytest1/images/day_000000.npy",
                "nighttest1/images/night_000000.npy"):
        a, b = np.load(os.path.join(root, rel)), np.load(os.path.join(other, rel))
        assert a.shape != b.shape or not np.array_equal(a, b), rel


def test_each_image_depends_only_on_its_own_generator(small_root):
    root, manifest = small_root
    for set_index, set_name, stem in ((0, "main", "synth_000007"), (1, "daytest1", "day_000003"),
                                      (2, "nighttest1", "night_000004")):
        folder = os.path.join(root, SET_DIRS[set_name])
        night = manifest["sets"][set_name]["images"][stem]["night"]
        image, boxes = render_scene(image_rng(0, set_index, int(stem[-6:])), night, 1)
        assert np.array_equal(image, np.load(os.path.join(folder, "images", stem + ".npy")))
        with open(os.path.join(folder, "labels", stem + ".txt"), encoding="utf-8") as f:
            assert f.read() == yolo_lines(boxes, *image.shape[:2])


# ---- layout --------------------------------------------------------------------------------------

def test_layout_counts_and_classes(small_root):
    root, manifest = small_root
    with open(os.path.join(root, "classes.txt"), encoding="utf-8") as f:
        assert f.read() == "person\n"
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        assert json.load(f) == manifest
    expected = {"main": 20, "daytest1": 6, "nighttest1": 6}
    for set_name, n in expected.items():
        samples = list(_samples(root, set_name))
        counts = manifest["sets"][set_name]["counts"]
        labeled = [s for s in samples if s[2] is not None]
        assert len(samples) == n == counts["images"]
        assert len(labeled) == counts["labeled"]
        assert sum(len(s[2]) for s in labeled) == counts["boxes"]
        label_dir = os.path.join(root, SET_DIRS[set_name], "labels")
        assert len(os.listdir(label_dir)) == len(labeled)
        if set_name == "main":
            assert n - len(labeled) == 1  # 5 % of 20 unlabeled
            assert counts["day"] == counts["night"] == 10
        else:
            assert len(labeled) == n
            assert counts["night" if set_name == "nighttest1" else "day"] == n


def test_images_and_label_lines_are_valid(small_root):
    root, _ = small_root
    for set_name in SET_DIRS:
        for stem, image, rows in _samples(root, set_name):
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 5, stem
            assert 280 <= image.shape[0] <= 320 and 370 <= image.shape[1] <= 410, (stem, image.shape)
            for row in rows or []:
                assert len(row) == 5, (stem, row)
                assert row[0] == "0"
                assert all(len(v.split(".")[1]) == 6 for v in row[1:]), row
                xc, yc, w, h = map(float, row[1:])
                assert all(0.0 <= v <= 1.0 for v in (xc, yc, w, h)), (stem, row)
                assert w > 0 and h > 0
                assert xc - w / 2 >= -1e-6 and xc + w / 2 <= 1 + 1e-6 and yc + h / 2 <= 1 + 1e-6


def test_empty_label_file_when_no_objects(small_root):
    root, manifest = small_root
    empties = 0
    for set_name, folder in SET_DIRS.items():
        for stem, record in manifest["sets"][set_name]["images"].items():
            path = os.path.join(root, folder, "labels", stem + ".txt")
            if record["labeled"] and record["boxes"] == 0:
                assert os.path.getsize(path) == 0
                empties += 1
            elif record["labeled"]:
                assert os.path.getsize(path) > 0
    assert empties >= 1


def test_objects_per_image_and_sizes(small_root):
    root, _ = small_root
    per_image, buckets, heights = [], set(), []
    for set_name in SET_DIRS:
        for _, image, rows in _samples(root, set_name):
            if rows is None:
                continue
            boxes = _pixel_boxes(rows, *image.shape[:2])
            per_image.append(len(boxes))
            buckets |= {area_bucket(*b[1:]) for b in boxes}
            heights += [b[4] - b[2] for b in boxes]
    assert max(per_image) <= 5 and 1.5 <= np.mean(per_image) <= 3.5
    assert buckets == {"small", "medium", "large"}
    assert min(heights) < 32 and max(heights) > 100


# ---- day vs night --------------------------------------------------------------------------------

def _channel_stats(root: str, set_name: str) -> dict[str, float]:
    rgb, t_in, t_out, zeros, ev_in, ev_out = [], [], [], [], [], []
    for _, image, rows in _samples(root, set_name):
        if not rows:
            continue
        inside = _box_mask(_pixel_boxes(rows, *image.shape[:2]), *image.shape[:2])
        thermal, event = image[..., 3].astype(np.float64), image[..., 4]
        rgb.append(image[..., :3].mean())
        t_in.append(thermal[inside].mean())
        t_out.append(thermal[~inside].mean())
        zeros.append((event == 0).mean())
        ev_in.append((event[inside] > 0).mean())
        ev_out.append((event[~inside] > 0).mean())
    return {"rgb": np.mean(rgb), "contrast": np.mean(t_in) - np.mean(t_out), "min_zeros": np.min(zeros),
            "ev_in": np.mean(ev_in), "ev_out": np.mean(ev_out)}


def test_night_is_dark_in_rgb_and_warm_in_thermal(small_root):
    root, _ = small_root
    day, night = _channel_stats(root, "daytest1"), _channel_stats(root, "nighttest1")
    assert day["rgb"] > 90
    assert night["rgb"] < 0.3 * day["rgb"]
    assert night["contrast"] > 40
    assert night["contrast"] > 2.5 * day["contrast"]
    assert day["contrast"] > 3  # objects are moderately warmer by day too


def test_event_channel_is_sparse_with_object_edges(small_root):
    root, _ = small_root
    for set_name in ("daytest1", "nighttest1"):
        stats = _channel_stats(root, set_name)
        assert stats["min_zeros"] > 0.95, set_name
        assert stats["ev_in"] > 5 * stats["ev_out"], (set_name, stats)


# ---- CLI -----------------------------------------------------------------------------------------

def _cli_module():
    spec = importlib.util.spec_from_file_location("make_synthetic", os.path.join(REPO, "tools", "make_synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_multiclass_and_reruns(tmp_path, capsys):
    out = str(tmp_path / "synth3")
    args = ["--out", out, "--num-images", "12", "--num-day-test", "2", "--num-night-test", "2", "--classes", "3"]
    run = subprocess.run([sys.executable, "tools/make_synthetic.py", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "12 images" in run.stdout and "boxes" in run.stdout
    with open(os.path.join(out, "classes.txt"), encoding="utf-8") as f:
        assert f.read().split() == ["person", "vehicle", "cyclist"]
    aspect = {0: [], 1: [], 2: []}
    for set_name in SET_DIRS:
        for _, image, rows in _samples(out, set_name):
            for c, x0, y0, x1, y1 in _pixel_boxes(rows or [], *image.shape[:2]):
                aspect[c].append((x1 - x0) / (y1 - y0))
    assert all(aspect.values()), {c: len(v) for c, v in aspect.items()}
    assert np.median(aspect[1]) > 2 * np.median(aspect[0])  # vehicles are wide, people upright

    cli = _cli_module()
    assert cli.main(args) == 0
    assert "already there" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(args[:-1] + ["2"])
    assert "other parameters" in str(exc.value.code)
    smaller = ["--out", out, "--num-images", "8", "--num-day-test", "2", "--num-night-test", "2", "--classes", "2"]
    assert cli.main(smaller + ["--force"]) == 0
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        assert json.load(f)["params"]["num_classes"] == 2
    assert len(os.listdir(os.path.join(out, "images"))) == 8  # no stale files of the first run
    assert len(os.listdir(os.path.join(out, "labels"))) == 8
    ids = {row[0] for s in SET_DIRS for _, _, rows in _samples(out, s) for row in rows or []}
    assert ids <= {"0", "1"}


def test_cli_refuses_foreign_images_without_force(tmp_path):
    out = tmp_path / "real"
    (out / "images").mkdir(parents=True)
    np.save(out / "images" / "a.npy", np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(SystemExit) as exc:
        _cli_module().main(["--out", str(out), "--num-images", "2"])
    assert "no manifest.json" in str(exc.value.code)
    assert (out / "images" / "a.npy").exists()
