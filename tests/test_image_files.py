"""Real sensor files as they come (cadet_d2/data/images.py, palettes.py): near-grey, colour-mapped
and EXIF-rotated thermal/event files, read one way by the loader, check_data and the exporter's
input path, and check_data's verdict agreeing with the loader's behaviour on every fixture."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from cadet_d2.data import DataError, MultiModalDatasetMapper
from cadet_d2.data import palettes
from cadet_d2.data.check import check_root
from cadet_d2.data.images import decode_grey, image_header, image_size, read_grey, read_rgb
from cadet_d2.data.pairs import read_pairs_csv
from cadet_d2.export.contract import paired_image

from conftest import write_labels
from test_convert import SAMPLES, needs_samples

H, W = 48, 64
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smooth(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """(h, w) uint8 smooth grey scene: a ramp plus blurred noise (compresses like a photograph)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(20, 235, w)[None, :].repeat(h, 0)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w)), (7, 7), 0)
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


def tinted(grey: np.ndarray, tint: int) -> np.ndarray:
    """(h, w, 3) BGR: ``grey`` in every channel, ``tint`` added to red."""
    x = np.repeat(grey[:, :, None], 3, 2).astype(np.int32)
    x[:, :, 2] += tint
    return np.clip(x, 0, 255).astype(np.uint8)


def rendered(grey: np.ndarray, palette: str) -> np.ndarray:
    """(h, w, 3) BGR: ``grey`` rendered through a palette, as a thermal app exports it."""
    return np.ascontiguousarray(palettes.table(palette)[grey][:, :, ::-1].astype(np.uint8))


def events_rendering(background: int) -> np.ndarray:
    """(h, w, 3) BGR: sparse positive (red) and negative (blue) events on a white or black background."""
    rng = np.random.default_rng(3)
    x = np.full((H, W, 3), background, np.uint8)
    pos, neg = rng.random((H, W)) < 0.05, rng.random((H, W)) < 0.05
    x[pos] = (0, 0, 255)
    x[neg & ~pos] = (255, 0, 0)
    return x


def save_oriented(path: str, image: np.ndarray, orientation: int) -> None:
    """``image`` (h, w[, 3] RGB) stored as it is, tagged with an EXIF ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(path, exif=exif, quality=95)


# (name, modality, writer, expected): expected "grey", "near-grey" or the error's regex.
def write_fixtures(folder: str) -> dict[str, tuple[str, str, str]]:
    """Every image fixture, good and bad: {name: (modality, path, expected)}."""
    os.makedirs(folder, exist_ok=True)
    g = smooth()
    out = {}

    def put(name, modality, expected, image=None, writer=None):
        path = os.path.join(folder, name)
        if writer is not None:
            writer(path)
        else:
            assert cv2.imwrite(path, image)
        out[name] = (modality, path, expected)

    put("grey1.png", "thermal", "grey", g)
    put("grey3.png", "thermal", "grey", tinted(g, 0))
    put("near1.png", "thermal", "near-grey", tinted(g, 1))
    put("near2.png", "thermal", "near-grey", tinted(g, 2))
    put("far.png", "thermal", r"channels differ by up to 9 grey levels", tinted(g, 9))
    put("near2.jpg", "thermal", "near-grey", tinted(g, 2))
    put("far.jpg", "thermal", r"channels differ by up to \d+ grey levels", tinted(g, 12))
    put("grey16.png", "thermal", "grey", (g.astype(np.uint16) * 40 + 6000))
    put("float32.tiff", "thermal", r"pixel type float32 is not supported", g.astype(np.float32))
    put("event_near.png", "event", "near-grey", tinted(g // 4, 1))
    for p in ("opencv.jet", "matplotlib.inferno"):
        put(f"{p}.png", "thermal", rf"rendered through a colour palette \(closest: \w+\.\w+", rendered(g, p))
    cold = (g.astype(np.uint16) * 7 // 255).astype(np.uint8)  # a night scene: values 0..6, mostly black/blue
    put("jet_cold.jpg", "thermal", r"rendered through a colour palette \(closest: \w+\.jet", rendered(cold, "opencv.jet"))
    put("hot_cold.png", "thermal", r"rendered through a colour palette \(closest: \w+\.\w*hot",
        rendered(cold * 20, "opencv.hot"))
    put("jet.jpg", "thermal", r"rendered through a colour palette \(closest: \w+\.jet", rendered(g, "opencv.jet"))
    put("events_white.png", "event", r"colour rendering of events .* on white", events_rendering(255))
    put("events_black.png", "event", r"colour rendering of events .* on black", events_rendering(0))
    photo = np.random.default_rng(5).integers(0, 255, (H, W, 3), dtype=np.uint8)
    put("photo_as_thermal.png", "thermal", r"no palette fits it", photo)
    for o in (1, 3, 6, 8):
        put(f"rgb_o{o}.jpg", "rgb", "rgb", writer=lambda p, o=o: save_oriented(
            p, np.repeat(g[:, :, None], 3, 2) // 2 + np.uint8(o * 10), o))
        put(f"thermal_o{o}.jpg", "thermal", "grey", writer=lambda p, o=o: save_oriented(p, g, o))
    put("rgb.png", "rgb", "rgb", tinted(g, 40))

    def truncated(path):
        cv2.imwrite(path, tinted(g, 40))
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)  # past the header, before the end-of-image marker

    put("truncated.jpg", "thermal", r"truncated image", writer=truncated)
    put("truncated_rgb.jpg", "rgb", r"truncated image", writer=truncated)
    return out


def test_near_grey_read_as_luma_identically_on_every_read(tmp_path):
    fx = write_fixtures(str(tmp_path))
    for name in ("near1.png", "near2.png"):
        path = fx[name][1]
        image, verdict = decode_grey(path)
        assert verdict.kind == "near-grey" and verdict.channel_difference == int(name[4])
        assert np.array_equal(image, cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY))
    path = fx["near2.jpg"][1]
    first, verdict = decode_grey(path)
    again, verdict2 = decode_grey(path)  # the per-process fast path: luma only
    assert 1 <= verdict.channel_difference <= 3 and verdict == verdict2
    assert np.array_equal(first, again) and np.array_equal(first, cv2.imread(path, cv2.IMREAD_GRAYSCALE))
    assert np.array_equal(read_grey(path, 2), read_grey(path, 2))
    with pytest.raises(DataError, match=r"near2\.jpg: .*channels differ by up to \d grey levels .*TOLERANCE 0"):
        read_grey(path, tolerance=0)  # the fast path keeps the difference: a stricter tolerance still refuses
    with pytest.raises(DataError, match=r"far\.png: 3-channel image whose channels differ by up to 9 grey levels"):
        read_grey(fx["far.png"][1])
    assert read_grey(fx["far.png"][1], tolerance=9).shape == (H, W)


@pytest.mark.parametrize("palette, wrong", [("opencv.jet", "matplotlib.inferno"), ("matplotlib.inferno", "opencv.jet")])
def test_palette_recognised_decoded_back_and_wrong_one_caught(tmp_path, palette, wrong):
    g = smooth(1)
    path = str(tmp_path / "mapped.png")
    cv2.imwrite(path, rendered(g, palette))
    with pytest.raises(DataError, match=rf"mapped\.png: .*colour palette \(closest: \w+\.{palette.split('.')[1]}"):
        read_grey(path)
    image, verdict = decode_grey(path, palette=palette)
    assert verdict.kind == "palette" and verdict.residual < 1.5
    assert np.abs(image.astype(int) - g).mean() < 1.0
    with pytest.raises(DataError, match=rf"THERMAL_PALETTE {wrong} does not fit this file \(mean residual"):
        read_grey(path, palette=wrong)
    jpg = str(tmp_path / "mapped.jpg")  # JPEG artefacts: a larger residual, still within MAX_RESIDUAL
    cv2.imwrite(jpg, rendered(g, palette))
    image, verdict = decode_grey(jpg, palette=palette)
    assert verdict.residual <= palettes.MAX_RESIDUAL and np.abs(image.astype(int) - g).mean() < 3.0


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_applied_on_every_read_and_to_both_partners(tmp_path, orientation):
    g = smooth(2)
    rgb = np.repeat(g[:, :, None], 3, 2) // 2
    rgb[5:15, 10:30] = (250, 0, 0)  # a red block, warm in the thermal image too
    t = g.copy()
    t[5:15, 10:30] = 255
    pr, pt, pt3 = (str(tmp_path / f) for f in ("rgb.jpg", "thermal.jpg", "thermal3.jpg"))
    save_oriented(pr, rgb, orientation)
    save_oriented(pt, t, orientation)
    save_oriented(pt3, np.repeat(t[:, :, None], 3, 2), orientation)
    want = np.asarray(ImageOps.exif_transpose(Image.open(pr)))
    size = want.shape[:2]
    assert image_header(pr) == (*size, orientation) and image_size(pt) == size
    assert read_rgb(pr).shape == want.shape and np.abs(read_rgb(pr).astype(int) - want).mean() < 2
    for path in (pt, pt3):
        first, again = read_grey(path), read_grey(path)
        assert first.shape == size and np.array_equal(first, again)
        assert read_grey(path, 2).shape == ((size[0] + 1) // 2, (size[1] + 1) // 2)
        assert np.array_equal(read_grey(path, 2), read_grey(path, 2))
    hot_rgb = read_rgb(pr)[:, :, 0] > 200
    hot_t = read_grey(pt) > 240
    assert (hot_rgb & hot_t).sum() >= 0.9 * hot_rgb.sum() > 0  # the block on the same pixels in both
    meta = {"input": {"paired_files": {"modalities": ["rgb", "thermal"], "thermal_percentiles": [1, 99],
                                       "thermal_range": []}}}
    stacked = paired_image({"rgb": pr, "thermal": pt}, meta)  # the exporter's input path: the same reader
    assert stacked.shape == (*size, 4) and np.array_equal(stacked[:, :, 3], read_grey(pt))


def _write_pairs(folder: str, fixtures: dict, base: str) -> None:
    """A pairs.csv set in ``folder``: each fixture as its modality's file of a pair whose other
    files are the good ``base`` fixtures (``base``: "grey1.png" thermal/event, "rgb.png" rgb)."""
    good = {"rgb": fixtures["rgb.png"][1], "thermal": fixtures[base][1], "event": fixtures[base][1]}
    os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
    rows = ["stem,rgb,thermal,event"]
    for i, (name, (m, path, _)) in enumerate(sorted(fixtures.items())):
        files = {**good, m: path}
        stem = f"p{i:02d}"
        rows.append(",".join([stem, files["rgb"], files["thermal"], files["event"]]))
        write_labels(os.path.join(folder, "labels", stem + ".txt"), ["0 0.5 0.5 0.2 0.2"])
    with open(os.path.join(folder, "pairs.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def _loader_refuses(mapper, pair) -> str | None:
    """The loader's verdict on one pair: None, or the DataError (registration's header read, then the mapper)."""
    try:
        h, w = image_size(pair.files["rgb"])
        for path in pair.files.values():
            image_size(path)
        mapper.load_pair({"file_name": pair.files["rgb"], "pair": pair.files, "height": h, "width": w}, 1)
    except DataError as e:
        return str(e)
    return None


def _mapper(modalities=("rgb", "thermal", "event")):
    return MultiModalDatasetMapper(is_train=False, augmentations=[], photometric=[], channel_indices=[0, 1, 2, 3, 4],
                                   file_channels=5, rgb_slice=None, modalities=modalities,
                                   pair_channels=tuple({"rgb": 3}.get(m, 1) for m in modalities))


def test_check_data_and_loader_agree_on_every_fixture(tmp_path):
    fixtures = write_fixtures(str(tmp_path / "files"))
    root = str(tmp_path / "root")
    _write_pairs(os.path.join(root, "train"), fixtures, "grey1.png")
    report = check_root(root, num_classes=1)
    errors = {p.path: p.message for p in report.errors}
    mapper = _mapper()
    pairs = read_pairs_csv(os.path.join(root, "train", "pairs.csv"))
    for (name, (m, path, expected)), pair in zip(sorted(fixtures.items()), pairs):
        assert pair.files[m] == path
        refused = _loader_refuses(mapper, pair)
        bad = [f for f in pair.files.values() if f in errors]
        assert (refused is not None) == bool(bad), (name, refused, bad)  # error <=> the loader refuses
        if expected in ("grey", "near-grey", "rgb"):
            assert refused is None, (name, refused)
        else:
            assert bad == [path] and re.search(expected, errors[path]), (name, errors.get(path))
            assert re.search(expected, refused), (name, refused)  # the same words from both
    s = report.sets[0]
    near = sum(1 for m, _, e in fixtures.values() if e == "near-grey" and m == "thermal")
    assert s.near_grey["thermal"][0] == near and s.near_grey["thermal"][1] == 2
    assert s.near_grey["event"] == [1, 1] and s.rotated == 6  # orientations 3, 6, 8 on RGB and thermal
    text = report.format()
    assert f"{near} near-grey 3-channel thermal file(s) (train), largest channel difference 2" in text
    assert "6 file(s) with an EXIF orientation other than 1" in text
    quick = check_root(root, num_classes=1, headers_only=True, max_stat_images=3)  # says so, finds truncation
    assert "Pixels not checked (--headers-only)" in quick.format()
    truncated = {fixtures["truncated.jpg"][1], fixtures["truncated_rgb.jpg"][1]}
    assert truncated <= {p.path for p in quick.errors}  # and the files its mean/std subsample met
    assert all("mean/std pass" in p.message for p in quick.errors if p.path not in truncated)


def test_check_data_with_a_palette_decodes_mapped_thermal_and_reports_residual(tmp_path):
    g = smooth(4)
    folder = tmp_path / "raw"
    folder.mkdir()
    rows = ["stem,rgb,thermal"]
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}_rgb.png"), tinted(g, 40))
        cv2.imwrite(str(folder / f"{i}_ir.png"), rendered(g, "opencv.jet"))
        rows.append(f"s{i},{folder / f'{i}_rgb.png'},{folder / f'{i}_ir.png'}")
    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    (root / "train" / "pairs.csv").write_text("\n".join(rows) + "\n")
    plain = check_root(str(root), num_classes=1)
    assert len(plain.errors) == 3 and "THERMAL_PALETTE opencv.jet" in plain.errors[0].message
    r = subprocess.run([sys.executable, "tools/check_data.py", str(root), "--classes", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "3 error(s)" in r.stdout and "0_ir.png: 3-channel image whose channels differ" in r.stdout
    mapped = check_root(str(root), num_classes=1, thermal_palette="opencv.jet")
    assert not mapped.errors and mapped.sets[0].palette["thermal"][0] == 3
    assert "3 colour thermal file(s) (train) mapped back through palette opencv.jet" in mapped.format()


def test_pair_partners_with_different_orientations_are_reported(tmp_path):
    g = smooth(5, 40, 40)
    save_oriented(str(tmp_path / "r.jpg"), np.repeat(g[:, :, None], 3, 2), 1)
    save_oriented(str(tmp_path / "t.jpg"), g, 6)
    (tmp_path / "root" / "train").mkdir(parents=True)
    (tmp_path / "root" / "train" / "pairs.csv").write_text(f"stem,rgb,thermal\na,{tmp_path / 'r.jpg'},"
                                                           f"{tmp_path / 't.jpg'}\n")
    report = check_root(str(tmp_path / "root"), num_classes=1)
    assert any("1 pair(s) whose files have different EXIF orientations (e.g. a (rgb 1, thermal 6))" in p.message
               for p in report.warnings)


@needs_samples
def test_shared_samples_every_file_decoded_and_agreeing_with_the_loader(tmp_path):
    from cadet_d2.convert.cli import main as convert_main

    mapper = _mapper(("rgb", "thermal"))
    for dataset, folder in (("llvip", "LLVIP"), ("flir", "FLIR_aligned_coco"), ("kaist", "KAIST"), ("m3fd", "M3FD")):
        out = str(tmp_path / dataset)
        extra = ["--test-fraction", "0"] if dataset == "m3fd" else []
        assert convert_main([dataset, "--src", os.path.join(SAMPLES, folder), "--out", out, *extra]) == 0
        report = check_root(out)
        assert not report.errors, (dataset, [str(p) for p in report.errors])
        assert all(s.decoded for s in report.sets)
        for s in report.sets:
            for pair in read_pairs_csv(os.path.join(s.folder, "pairs.csv")):
                assert _loader_refuses(mapper, pair) is None
    tiff = os.path.join(SAMPLES, "thermal-16bit", "flir_duo_pro_r_radiometric.tiff")
    image, verdict = decode_grey(tiff)
    assert verdict.kind == "grey" and image.dtype == np.uint8 and image.shape == image_size(tiff)
    assert np.array_equal(image, read_grey(tiff)) and image.min() == 0 and image.max() == 255


def test_kaist_with_near_grey_png_lwir_converts_checks_and_trains(tmp_path, one_thread):
    """KAIST as several redistributions store it (lwir as 3-channel PNG whose channels differ by up
    to 2): convert_dataset kaist, check_data (no error, the near-grey files counted), then a tiny
    training run and its evaluation read them."""
    from detectron2.engine import default_argument_parser

    from cadet_d2.convert.cli import main as convert_main
    from cadet_d2.engine.train import main as train_main
    from test_convert_train import SMOKE

    src = tmp_path / "kaist"
    bbgt = "% bbGt version=3\nperson 40 20 30 70 0 0 0 0 0 0 0\n"  # KAIST's "reasonable": >= 55 px high
    for k, frame in enumerate(("set06/V000/I00001", "set06/V000/I00002", "set09/V000/I00003", "set09/V000/I00004")):
        s, v, i = frame.split("/")
        for sub in ("visible", "lwir"):
            os.makedirs(src / s / v / sub, exist_ok=True)
        g = smooth(k, 128, 160)
        g[20:90, 40:70] = 240
        cv2.imwrite(str(src / s / v / "visible" / f"{i}.jpg"), tinted(g, 30))
        cv2.imwrite(str(src / s / v / "lwir" / f"{i}.png"), tinted(g, 1 + k % 2))  # differences 1 and 2
        (src / s / v / f"{i}.txt").write_text(bbgt)
    root, out = str(tmp_path / "root"), str(tmp_path / "run")
    assert convert_main(["kaist", "--src", str(src), "--out", root]) == 0
    report = check_root(root)
    assert not report.errors, [str(p) for p in report.errors]
    assert sum(s.near_grey.get("thermal", [0])[0] for s in report.sets) >= 4
    assert "near-grey 3-channel thermal file(s) (test), largest channel difference 2" in report.format()
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "datasets", "kaist", "frm_ffm_mit_b1.yaml"), *SMOKE,
        "CADET.DATA.ROOT", root, "OUTPUT_DIR", out, "CADET.DATA.TRAIN_SET", "test",
        "CADET.DATA.TEST_SETS", "['test_day']", "DATASETS.TEST", "('kaist_test_day',)"])
    train_main(args)
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert os.path.isfile(os.path.join(out, "eval_metrics.json"))


def test_config_keys_checked_when_the_config_loads(tmp_path):
    from cadet_d2.config import validate_cadet_config
    from conftest import tiny_cfg

    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "out"))
    assert cfg.CADET.INPUT.GREY_TOLERANCE == 3 and cfg.CADET.INPUT.THERMAL_PALETTE == ""
    validate_cadet_config(cfg)
    cfg.CADET.INPUT.THERMAL_PALETTE = "iron"
    with pytest.raises(ValueError, match=r"THERMAL_PALETTE = 'iron' is not a known palette: opencv\.autumn"):
        validate_cadet_config(cfg)
    cfg.CADET.INPUT.THERMAL_PALETTE = "opencv.jet"
    cfg.CADET.INPUT.GREY_TOLERANCE = -1
    with pytest.raises(ValueError, match=r"GREY_TOLERANCE = -1 must be an integer in 0\.\.255"):
        validate_cadet_config(cfg)
    cfg.CADET.INPUT.GREY_TOLERANCE = 5
    mapper = MultiModalDatasetMapper(cfg, False)
    assert (mapper.grey_tolerance, mapper.thermal_palette) == (5, "opencv.jet")
