"""tools/check_data.py: a root with one of each problem is reported file by file, line by line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cadet_d2.data.check import check_root, main
from conftest import make_tiny_root, write_image, write_labels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def bad_root(tmp_path) -> str:
    root = make_tiny_root(str(tmp_path / "data"), n=6, test_sets=("daytest1",), n_test=2)
    img, lab = os.path.join(root, "images"), os.path.join(root, "labels")
    good = np.zeros((48, 64, 5), np.uint8)
    # images
    write_image(os.path.join(img, "trunc.npy"), good)
    with open(os.path.join(img, "trunc.npy"), "r+b") as f:
        f.truncate(300)
    with open(os.path.join(img, "garbage.npy"), "wb") as f:
        f.write(b"this is not an npy file")
    np.save(os.path.join(img, "objects.npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    write_image(os.path.join(img, "float.npy"), good.astype(np.float32))
    write_image(os.path.join(img, "three.npy"), good[:, :, :3])
    write_image(os.path.join(img, "empty.npy"), good[:0])
    write_image(os.path.join(img, "dup.npy"), good)
    with open(os.path.join(img, "dup.NPY"), "wb") as f:
        np.save(f, good)
    with open(os.path.join(img, "photo.png"), "wb") as f:
        f.write(b"\x89PNG")
    # labels: one bad line each, after a good line
    ok = "0 0.5 0.5 0.2 0.2"
    write_labels(os.path.join(lab, "img0000.txt"), [ok, "0 0.5 0.5 0.1"])
    write_labels(os.path.join(lab, "img0001.txt"), [ok, "0 0.5 abc 0.1 0.1"])
    write_labels(os.path.join(lab, "img0002.txt"), [ok, "0 0.5 nan 0.1 0.1"])
    write_labels(os.path.join(lab, "img0003.txt"), [ok, "1 0.5 0.5 1.5 0.1"])
    write_labels(os.path.join(lab, "img0004.txt"), [ok, "0 0.5 0.5 0.0 0.2"])
    write_labels(os.path.join(lab, "img0005.txt"), [ok, "", "7 0.5 0.5 0.1 0.1"])
    write_labels(os.path.join(lab, "orphan.txt"), [ok])
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("person\ncar\n")
    # the same stem in the root and in a test set
    write_image(os.path.join(root, "daytest1", "images", "img0000.npy"), good)
    return root


def _find(report, needle: str, path_end: str, line: int | None = None, severity: str = "error"):
    hits = [p for p in report.problems if p.path.endswith(path_end) and needle in p.message
            and p.line == line and p.severity == severity]
    assert hits, f"no {severity} {needle!r} for {path_end}:{line} in\n" + "\n".join(map(str, report.problems))


def test_every_problem_is_reported_with_file_and_line(bad_root):
    r = check_root(bad_root, progress=False)
    _find(r, "unreadable .npy", "images/trunc.npy")
    _find(r, "unreadable .npy", "images/garbage.npy")
    _find(r, "pickled/object array", "images/objects.npy")
    _find(r, "dtype is float32, expected uint8", "images/float.npy")
    _find(r, "expected (H, W, 5)", "images/three.npy")
    _find(r, "zero-size image", "images/empty.npy")
    _find(r, "duplicate stem: dup.NPY, dup.npy", "images/dup.NPY")
    _find(r, "not a .npy image", "images/photo.png", severity="warning")
    _find(r, "ignored by the loader: the extension must be lowercase", "images/dup.NPY", severity="warning")
    _find(r, "expected 5 fields", "labels/img0000.txt", 2)
    _find(r, "non-numeric field", "labels/img0001.txt", 2)
    _find(r, "NaN or infinite", "labels/img0002.txt", 2)
    _find(r, "must lie in [0, 1]", "labels/img0003.txt", 2)
    _find(r, "zero-area box", "labels/img0004.txt", 2, severity="warning")
    _find(r, "class id 7 outside the 2 classes", "labels/img0005.txt", 3)
    _find(r, "label file without an image", "labels/orphan.txt")
    _find(r, "1 stem(s) in both (root) and daytest1 (e.g. img0000)", "daytest1", severity="warning")
    assert len(r.errors) == 13 and len(r.warnings) == 4
    root = r.sets[0]
    assert (root.name, root.images, root.labeled, root.unlabeled) == ("(root)", 13, 6, 7)  # dup.NPY is not an image for the loader
    assert root.boxes == 6 + 0  # the good line of each label file; the bad ones are not counted
    assert root.boxes_per_class == {"0": 6}
    assert [s.name for s in r.sets] == ["(root)", "daytest1"] and r.sets[1].images == 3
    assert (root.min_hw, root.max_hw) == ([48, 64], [48, 64])
    text = r.format()
    assert f"ERROR   {bad_root}/labels/img0005.txt:3: class id 7" in text
    assert "13 error(s), 4 warning(s)" in text and "MODEL.PIXEL_MEAN: [" in text


def test_channel_stats_and_subsample(tmp_path):
    root = str(tmp_path / "r")
    for i, v in enumerate([10, 20, 30, 40]):
        a = np.zeros((4, 4, 2), np.uint8)
        a[..., 0], a[..., 1] = v, 100
        write_image(os.path.join(root, "images", f"s{i}.npy"), a)
    r = check_root(root, channels=2, progress=False)
    np.testing.assert_allclose(r.pixel_mean, [25.0, 100.0])
    np.testing.assert_allclose(r.pixel_std, [np.std([10, 20, 30, 40]), 1.0])  # constant: 1.0, never 0
    assert r.constant_channels == [1]
    assert (r.sets[0].unlabeled, r.errors) == (4, [])
    r = check_root(root, channels=2, max_stat_images=2, progress=False)
    assert (r.stats_images, r.stats_total) == (2, 4)
    np.testing.assert_allclose(r.pixel_mean, [25.0, 100.0])  # s0 and s3
    assert "an evenly spaced subsample of 2 of 4 images" in r.format()


def test_clean_root_exits_0(tiny_root, capsys):
    assert main([tiny_root, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 error(s), 0 warning(s)" in out and "daytest1" in out and "nighttest1" in out


def test_cli_exit_code_and_json(bad_root, tmp_path):
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, "tools/check_data.py", bad_root, "--classes", "1", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "labels/img0003.txt:2: class id 1 outside the 1 classes" in r.stdout
    report = json.loads(out.read_text())
    assert report["num_errors"] == 13 and report["classes_source"] == "--classes"
    assert {"severity": "error", "path": os.path.join(bad_root, "labels", "img0000.txt"), "line": 2,
            "message": "expected 5 fields 'class xc yc w h', got 4: '0 0.5 0.5 0.1'"} in report["problems"]
    assert report["sets"][0]["images"] == 13


def test_box_reaching_outside_the_image_is_a_warning_with_its_line(tmp_path):
    """The loader clips such a box silently; the check names it (beyond half a pixel)."""
    root = make_tiny_root(str(tmp_path / "data"), n=2)
    label = os.path.join(root, "labels", sorted(os.listdir(os.path.join(root, "labels")))[0])
    write_labels(label, ["0 0.5 0.5 0.2 0.2", "0 0.9 0.5 0.2 0.2", "0 0.95 0.5 0.2 0.2", "0 0.5 0.05 0.2 0.2"])
    r = check_root(root, progress=False)
    outside = [p for p in r.warnings if "outside the" in p.message]
    assert [(p.path, p.line) for p in outside] == [(label, 3), (label, 4)]  # line 2 ends at the edge
    assert "reaches 3.2 px outside the 48x64 image (clipped to it by the loader)" in outside[0].message
    assert "reaches 2.4 px outside" in outside[1].message
    assert not r.errors


def _pairs_set(folder, n, rgb_ext, thermal_size=(64, 80)):
    """``folder/pairs.csv`` of ``n`` pairs: RGB (64, 80) value 90; thermal rows 0 on top, 200 below."""
    import cv2

    os.makedirs(folder, exist_ok=True)
    rows = ["stem,rgb,thermal"]
    for i in range(n):
        rgb = os.path.join(folder, f"p{i}_rgb{rgb_ext}")
        thermal = os.path.join(folder, f"p{i}_ir.png")
        cv2.imwrite(rgb, np.full((64, 80, 3), 90, np.uint8))
        t = np.zeros(thermal_size, np.uint8)
        t[thermal_size[0] // 2:] = 200
        cv2.imwrite(thermal, t)
        rows.append(f"p{i},{rgb},{thermal}")
    with open(os.path.join(folder, "pairs.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def test_pair_stats_count_every_pixel_of_each_modality(tmp_path):
    """A PNG thermal beside a JPEG RGB image (decoded at 1/4) and a thermal of another size: each
    modality's mean is over all of its own pixels (the thermal mean is 100, not that of its top rows)."""
    root = str(tmp_path / "data")
    _pairs_set(os.path.join(root, "train"), 2, ".jpg")
    _pairs_set(os.path.join(root, "test"), 1, ".png", thermal_size=(128, 160))
    r = check_root(root, progress=False)
    assert r.stats_channels == ["rgb.R", "rgb.G", "rgb.B", "thermal"] and r.stats_reduced
    assert np.allclose(r.pixel_mean, [90, 90, 90, 100], atol=1.0)
    assert np.allclose(r.pixel_std[3], 100, atol=1.0)
    text = r.format()
    assert f"Data root {root}: paired image files" in text and "JPEGs at 1/4 size" in text
    os.rename(os.path.join(root, "train"), os.path.join(root, "other"))
    text = check_root(root, progress=False).format()
    assert "No per-channel mean/std: they are measured on the (root) set or the train set" in text
