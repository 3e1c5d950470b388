"""Event-camera recordings (cadet_d2/events/): the readers against the shared real recordings and
round trips through files the tests write, windows, representations, the homography, each bad
input, multi-channel event frames through the paired-file source, and the synthetic stream path
recording -> event frames -> a short training and evaluation."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import h5py
import hdf5plugin
import numpy as np
import pytest
import torch

from cadet_d2.data.errors import DataError
from cadet_d2.events.synthetic import make_event_stream_dataset, raw_header, write_raw
from cadet_d2.events import open_recording
from cadet_d2.events.chunk import EVENT_DTYPE
from cadet_d2.events.cli import main as convert_main
from cadet_d2.events.evt3 import ADDR_X, ADDR_Y, TIME_HIGH, TIME_LOW
from cadet_d2.events.homography import EventMapper
from cadet_d2.events.recording import read_all
from cadet_d2.events.represent import RepresentationParams, represent, to_uint8
from cadet_d2.events.windows import cut_windows

from conftest import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "..", "shared", "data", "event-samples")
EVT3_FILE = os.path.join(SAMPLES, "prophesee_evt3_imx636.raw")
# A tiny, short training run (MiT-b0 at 64 px, 2 iterations; as tests/conftest.py's tiny_cfg).
SMOKE = ["MODEL.DEVICE", "cpu", "CADET.BACKBONE.SIZE", "b0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
         "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
         "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
         "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
         "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32"]
needs_samples = pytest.mark.skipif(not os.path.isdir(SAMPLES), reason="no ../shared/data/event-samples")


def _events(n: int, seed: int = 0, t_max: int = 2_000_000, size=(64, 48)):
    rng = np.random.default_rng(seed)
    return (np.sort(rng.integers(0, t_max, n)), rng.integers(0, size[0], n), rng.integers(0, size[1], n),
            rng.integers(0, 2, n))


def _same(chunk, t, x, y, p) -> bool:
    return all(np.array_equal(getattr(chunk, k).astype(np.int64), np.asarray(v, np.int64))
               for k, v in zip("txyp", (t, x, y, p)))


# ---- readers on the shared recordings ------------------------------------------------------------

@needs_samples
def test_evt3_equals_the_decoded_ground_truth_event_by_event():
    truth = np.load(os.path.join(SAMPLES, "prophesee_evt3_imx636.decoded.npy"))
    for chunk_words in (None, 4099):  # one chunk, and the state carried over many
        rec = open_recording(EVT3_FILE, chunk_events=chunk_words)
        assert (rec.format, rec.sensor) == ("evt3", (1280, 720))
        events, stats = read_all(rec)
        assert _same(events, truth["t"], truth["x"], truth["y"], truth["p"])
    assert stats.total == 219_596 and stats.by_polarity == [104_064, 115_532]
    assert (stats.t_first, stats.t_last) == (11_718_656, 11_772_513)


@needs_samples
def test_aedat4_and_dat_counts_of_the_readme():
    rec = open_recording(os.path.join(SAMPLES, "inivation_dvxplorer.aedat4"))
    assert (rec.format, rec.sensor) == ("aedat4", (320, 240))
    _, stats = read_all(rec)
    assert stats.total == 111_954 and stats.by_polarity[1] == 55_023
    assert (stats.t_first, stats.t_last) == (1_605_537_493_718_345, 1_605_537_494_308_262)
    rec = open_recording(os.path.join(SAMPLES, "prophesee_ncars.dat"))
    assert (rec.format, rec.sensor) == ("dat", None)
    events, stats = read_all(rec)
    assert stats.total == 2_009 and stats.by_polarity == [659, 1_350]
    assert (stats.t_first, stats.t_last) == (0, 99_952) and events.x.max() <= 77 and events.y.max() <= 41


@needs_samples
def test_windows_histograms_sum_to_their_events_and_report_counts(tmp_path):
    truth = np.load(os.path.join(SAMPLES, "prophesee_evt3_imx636.decoded.npy"))
    times = np.array([11_725_000, 11_740_000, 11_750_000, 11_770_000])
    rec = open_recording(EVT3_FILE, chunk_events=5000)
    mapper = EventMapper((1280, 720), (1280, 720))
    params = RepresentationParams()
    for k, ev, t0, t1 in cut_windows(rec.chunks(), times, window_us=10_000):
        expected = int(((truth["t"] >= times[k] - 10_000) & (truth["t"] < times[k])).sum())
        assert len(ev) == expected > 0
        index, _ = mapper(ev.x, ev.y)
        counts = represent("polarity_counts", index, ev.t, ev.p, 720, 1280, t0, t1, params)
        assert counts.sum() == expected and counts[..., 1].sum() == int(ev.p.sum())
        assert represent("signed_count", index, ev.t, ev.p, 720, 1280, t0, t1, params).sum() == 2 * ev.p.sum() - len(ev)
    report = convert_main([EVT3_FILE, "--timestamps", _write_lines(tmp_path / "ts.txt", times), "--out",
                           str(tmp_path / "ev"), "--window-ms", "10", "--representation", "voxel_grid"])
    assert report["events_total"] == len(truth)
    assert report["events_by_polarity"] == {"0": 104_064, "1": 115_532}
    assert [w["events"] for w in report["windows"]] == [
        int(((truth["t"] >= t - 10_000) & (truth["t"] < t)).sum()) for t in times]
    frame = np.load(tmp_path / "ev" / "frame_000000.npy")
    assert frame.shape == (720, 1280, 5) and frame.dtype == np.uint8
    with open(tmp_path / "ev" / "events_report.json") as f:
        assert json.load(f)["empty_windows"] == 0


def _write_lines(path, values) -> str:
    path.write_text("".join(f"{int(v)}\n" for v in values))
    return str(path)


# ---- representations and mapping ---------------------------------------------------------------

def test_time_surface_and_voxel_grid_in_their_stated_ranges():
    t, x, y, p = _events(5000, t_max=100_000)
    index = y * 64 + x
    params = RepresentationParams(tau_us=20_000, bins=4)
    ts = represent("time_surface", index, t, p, 48, 64, 0, 100_000, params)
    seen = np.zeros(48 * 64, bool)
    seen[index] = True
    assert ts.min() >= 0 and ts.max() <= 1 and (ts.reshape(-1)[seen] > 0).all() and (ts.reshape(-1)[~seen] == 0).all()
    last = np.full(48 * 64, -1)
    for i in range(len(t)):  # reference: the latest event per pixel
        last[index[i]] = max(last[index[i]], t[i])
    np.testing.assert_allclose(ts.reshape(-1)[seen], np.exp(-(100_000 - last[seen]) / 20_000), rtol=1e-6)
    vox = represent("voxel_grid", index, t, p, 48, 64, 0, 100_000, params)
    count = represent("polarity_counts", index, t, p, 48, 64, 0, 100_000, params).sum(axis=2)
    assert vox.shape == (48, 64, 4) and (np.abs(vox).sum(axis=2) <= count + 1e-4).all()
    np.testing.assert_allclose(vox.sum(axis=2), represent("signed_count", index, t, p, 48, 64, 0, 100_000,
                                                          params)[..., 0], atol=1e-4)
    one = represent("voxel_grid", np.array([0]), np.array([50_000]), np.array([1], np.uint8), 1, 1, 0, 100_000, params)
    np.testing.assert_allclose(one.reshape(-1), [0, 0.5, 0.5, 0])  # t* = 1.5: half in bins 1 and 2
    assert to_uint8("voxel_grid", one, params).reshape(-1).tolist() == [128, 136, 136, 128]


def test_homography_maps_a_known_event_to_its_pixel(tmp_path):
    arr = np.zeros(2, EVENT_DTYPE)
    arr["t"], arr["x"], arr["y"], arr["p"] = [100, 200], [10, 30], [20, 5], [1, 0]
    np.save(tmp_path / "ev.npy", arr)
    (tmp_path / "h.txt").write_text("2 0 5\n0 2 3\n0 0 1\n")
    report = convert_main([str(tmp_path / "ev.npy"), "--start-us", "150", "--fps", "100000", "--frames", "1",
                           "--sensor-size", "40", "30", "--frame-size", "64", "48", "--homography",
                           str(tmp_path / "h.txt"), "--window-ms", "1", "--out", str(tmp_path / "out")])
    image = cv2.imread(str(tmp_path / "out" / "frame_000000.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (48, 64) and image[43, 25] == 128 + 16 and (image != 128).sum() == 1  # (2*10+5, 2*20+3)
    assert report["mapping"].startswith("homography") and report["windows"][0]["events"] == 1
    resize = EventMapper((40, 30), (80, 60))  # plain resize: pixel centres scale
    index, inside = resize(np.array([10, 39]), np.array([20, 29]))
    assert index.tolist() == [41 * 80 + 21, 59 * 80 + 79] and inside.all()


# ---- round trips through written files ---------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["evt3", "evt2"])
def test_raw_round_trip_across_time_wrap_and_chunks(fmt, tmp_path):
    t, x, y, p = _events(20_000, t_max=40_000_000)  # crosses EVT 3.0's 2^24 µs wrap twice
    path = str(tmp_path / "rec.raw")
    write_raw(path, fmt, t, x, y, p, (64, 48))
    rec = open_recording(path, chunk_events=777)
    assert (rec.format, rec.sensor) == (fmt, (64, 48))
    assert _same(read_all(rec)[0], t, x, y, p)


def test_hdf5_and_npz_readers(tmp_path):
    t, x, y, p = _events(3000)
    path = str(tmp_path / "events.h5")
    with h5py.File(path, "w") as f:
        g = f.create_group("events")
        for k, v, dt in (("t", t, "u4"), ("x", x, "u2"), ("y", y, "u2"), ("p", p, "u1")):
            g.create_dataset(k, data=v.astype(dt), **hdf5plugin.Blosc(cname="lz4"))
        f.create_dataset("t_offset", data=np.int64(1_000_000))
        f.create_dataset("ms_to_idx", data=np.searchsorted(t, np.arange(0, 2000) * 1000))
    rec = open_recording(path, sensor=(64, 48), chunk_events=1000)
    assert rec.format == "hdf5" and _same(read_all(rec)[0], t + 1_000_000, x, y, p)
    arr = np.zeros(len(t), [("ts", "<i8"), ("x", "<u2"), ("y", "<u2"), ("polarity", "i1")])
    arr["ts"], arr["x"], arr["y"], arr["polarity"] = t, x, y, p
    np.savez(tmp_path / "ev.npz", events=arr)
    assert _same(read_all(open_recording(str(tmp_path / "ev.npz"), sensor=(64, 48)))[0], t, x, y, p)


# ---- bad input ---------------------------------------------------------------------------------------------

def test_truncated_files_name_the_file_and_byte_offset(tmp_path):
    t, x, y, p = _events(100)
    path = str(tmp_path / "rec.raw")
    write_raw(path, "evt3", t, x, y, p, (64, 48))
    with open(path, "ab") as f:
        f.write(b"\x01")
    size = os.path.getsize(path)
    with pytest.raises(DataError, match=rf"rec.raw: truncated file: 1 byte\(s\) at byte offset {size - 1}"):
        read_all(open_recording(path))
    dat = tmp_path / "rec.dat"
    dat.write_bytes(b"% Version 2\n% Width 64\n% Height 48\n" + bytes([0, 8]) + b"\x00" * 13)
    with pytest.raises(DataError, match=r"rec.dat: truncated file: 5 byte\(s\) at byte offset"):
        read_all(open_recording(str(dat)))


@needs_samples
def test_truncated_aedat4_names_the_file(tmp_path):
    src = os.path.join(SAMPLES, "inivation_dvxplorer.aedat4")
    cut = tmp_path / "cut.aedat4"
    with open(src, "rb") as f:
        cut.write_bytes(f.read()[:400_000])
    with pytest.raises(DataError, match=r"cut.aedat4"):
        read_all(open_recording(str(cut)))


def test_header_contradicting_the_format(tmp_path):
    t, x, y, p = _events(50)
    path = str(tmp_path / "rec.raw")
    write_raw(path, "evt2", t, x, y, p, (64, 48))
    with pytest.raises(DataError, match=r"rec.raw: the header declares evt2 but the file was opened as evt3"):
        open_recording(path, "evt3")
    bad = tmp_path / "bad.raw"
    bad.write_bytes(b"% evt 3.0\n% format EVT2;height=48;width=64\n% end\n" + b"\x00" * 8)
    with pytest.raises(DataError, match=r"bad.raw: the header's '% evt' and '% format' lines disagree"):
        open_recording(str(bad))
    with pytest.raises(DataError, match=r"rec.raw: the file's header says the sensor is 64x48, the sensor size given"):
        open_recording(path, sensor=(640, 480))
    dat = tmp_path / "x.dat"
    dat.write_bytes(b"% Version 2\n" + bytes([0x0C, 16]) + b"\x00" * 16)
    with pytest.raises(DataError, match=r"x.dat: header at byte offset 12 declares event type 0x0c of 16 bytes"):
        open_recording(str(dat))


def _evt3_file(path, words) -> str:
    with open(path, "wb") as f:
        f.write(raw_header("evt3", 64, 48))
        f.write(np.asarray(words, np.uint16).tobytes())
    return str(path)


def test_timestamps_going_backwards_and_events_outside_the_sensor(tmp_path):
    w = [(TIME_HIGH << 12) | 5, (TIME_LOW << 12) | 10, (ADDR_Y << 12) | 3, (ADDR_X << 12) | 7,
         (TIME_HIGH << 12) | 3, (ADDR_X << 12) | 8,  # a TIME_HIGH step back: not a wrap-around
         (TIME_HIGH << 12) | 6, (ADDR_X << 12) | 63, (ADDR_X << 12) | 64]  # x 64 is outside 64 x 48
    path = _evt3_file(tmp_path / "back.raw", w)
    with pytest.raises(DataError, match=r"back.raw: event 1: t=12298 µs is before an earlier event's t=20490 µs"):
        read_all(open_recording(path))
    wrap = _evt3_file(tmp_path / "wrap.raw", [(TIME_HIGH << 12) | 4095, (ADDR_X << 12) | 1,
                                              (TIME_HIGH << 12) | 0, (ADDR_X << 12) | 2])
    assert read_all(open_recording(wrap))[0].t.tolist() == [4095 << 12, 1 << 24]  # the 24-bit wrap-around
    outside = _evt3_file(tmp_path / "out.raw", [w[0], w[1], w[2], w[3], w[8]])
    with pytest.raises(DataError, match=r"out.raw: event 1: at x=64, y=3, outside the declared sensor size 64x48"):
        read_all(open_recording(outside))
    events, stats = read_all(open_recording(path), on_error="skip")
    assert events.x.tolist() == [7, 63] and (stats.backwards, stats.outside_sensor, stats.total) == (1, 1, 4)


def test_frame_times_outside_the_recording_and_bad_timestamp_files(tmp_path):
    t, x, y, p = _events(200, t_max=1_000_000)
    rec = str(tmp_path / "rec.raw")
    write_raw(rec, "evt3", t, x, y, p, (64, 48))
    ts = _write_lines(tmp_path / "ts.txt", [500_000, 900_000, 2_000_000])
    with pytest.raises(DataError, match=r"ts.txt: frame 2 \(frame_000002\) at 2000000 µs is after the last event"):
        convert_main([rec, "--timestamps", ts, "--out", str(tmp_path / "a")])
    report = convert_main([rec, "--timestamps", ts, "--out", str(tmp_path / "b"), "--on-error", "skip"])
    assert report["written"] == 2 and report["frames_outside_recording"][0]["frame"] == 2
    assert sorted(os.listdir(tmp_path / "b")) == ["events_report.json", "frame_000000.png", "frame_000001.png"]
    early = _write_lines(tmp_path / "early.txt", [int(t[0]) - 1, 900_000])
    with pytest.raises(DataError, match=r"early.txt: frame 0 .* is before the first event"):
        convert_main([rec, "--timestamps", early, "--out", str(tmp_path / "c")])
    back = tmp_path / "back.txt"
    back.write_text("100\n300\n200\n")
    with pytest.raises(DataError, match=r"back.txt:3: frame time 200 µs is earlier than the frame before"):
        convert_main([rec, "--timestamps", str(back), "--out", str(tmp_path / "d")])
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_events.py"), rec, "--timestamps", ts,
                          "--out", str(tmp_path / "e")], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert run.returncode == 1 and "Traceback" not in run.stderr and "error: " in run.stderr and "ts.txt" in run.stderr


# ---- event frames through the paired-file source and the model ------------------------------------------

def test_multi_channel_event_frames_feed_an_event_stream_of_that_many_channels(tmp_path, one_thread):
    from detectron2.data import DatasetCatalog

    from cadet_d2.data import register_from_config
    from cadet_d2.data.mapper import MultiModalDatasetMapper
    from cadet_d2.engine.trainer import CadetTrainer

    root = tmp_path / "data"
    make_event_stream_dataset(str(root), 2, 1, 1, fmt="evt2")
    convert_main([str(root / "events.raw"), "--timestamps", str(root / "timestamps.txt"), "--rgb-dir",
                  str(root / "rgb"), "--out", str(root / "event"), "--representation", "voxel_grid", "--bins", "3"])
    (root / "pairs.csv").write_text((root / "pairs.csv").read_text().replace(".png\n", ".npy\n"))
    from cadet_d2.data.check import main as check_main

    (root / "daytest1" / "pairs.csv").unlink()
    (root / "nighttest1" / "pairs.csv").unlink()
    assert check_main([str(root), "--json", str(tmp_path / "check.json")]) == 0
    with open(tmp_path / "check.json") as f:
        assert "'event.2'" in str(json.load(f))  # three event channels measured for PIXEL_MEAN/STD
    opts = ["CADET.DATA.TEST_SETS", "[]", "DATASETS.TEST", "()", "CADET.INPUT.EVENT_CHANNELS", "3",
            "CADET.INPUT.LAYOUT.event", "[4, 5, 6]", "CADET.INPUT.FILE_CHANNELS", "7",
            "MODEL.PIXEL_MEAN", "[74, 76, 75, 92, 128, 128, 128]", "MODEL.PIXEL_STD", "[65, 66, 68, 46, 24, 24, 24]"]
    cfg = tiny_cfg(str(root), str(tmp_path / "out"), *opts)
    register_from_config(cfg)
    d = DatasetCatalog.get("synth_train")[0]
    image = torch.as_tensor(MultiModalDatasetMapper(cfg, is_train=False).load(d)).permute(2, 0, 1)
    frame = np.load(d["pair"]["event"])
    assert image.shape[0] == 7 and np.array_equal(image[4:].permute(1, 2, 0).numpy(), frame.astype(np.float32))
    from cadet_d2.export.contract import build_meta, preprocess_pair

    meta = build_meta(cfg, (64, 80), {})  # the export contract reads them as the test mapper does
    assert meta["input"]["paired_files"]["channels"]["event"] == 3
    test_mapper = MultiModalDatasetMapper(cfg, False)
    assert torch.equal(torch.from_numpy(preprocess_pair(d["pair"], meta)[0]), test_mapper(d)["image"])
    model = CadetTrainer.build_model(cfg)
    assert model.backbone.bottom_up.aux_stream.in_chans == 4  # thermal + 3 event channels
    from detectron2.engine import default_argument_parser

    from cadet_d2.engine.train import main as train_main

    out = tmp_path / "run"  # and it trains on them
    train_main(default_argument_parser().parse_args(["--config-file", os.path.join(REPO, "configs", "Base-CADET.yaml"),
                                                     *SMOKE, "CADET.DATA.ROOT", str(root), "OUTPUT_DIR", str(out),
                                                     *opts]))
    assert os.path.isfile(out / "model_final.pth")
    with pytest.raises(ValueError, match=r"CADET.INPUT.EVENT_CHANNELS = 3 but CADET.INPUT.LAYOUT.event = \[4\]"):
        tiny_cfg(str(root), str(tmp_path / "out"), "CADET.INPUT.EVENT_CHANNELS", "3")


def test_synthetic_streams_to_frames_to_training_and_evaluation(tmp_path, one_thread):
    from detectron2.engine import default_argument_parser

    from cadet_d2.engine.train import main as train_main

    root = tmp_path / "synth"
    manifest = make_event_stream_dataset(str(root), 4, 1, 1, fmt="evt3")
    for name, s in manifest["sets"].items():
        d = root / s["dir"]
        report = convert_main([str(d / "events.raw"), "--timestamps", str(d / "timestamps.txt"), "--rgb-dir",
                               str(d / "rgb"), "--out", str(d / "event")])
        assert report["events_total"] == s["events_total"] and report["events_by_polarity"] == s["events_by_polarity"]
        assert report["written"] == s["frames"] and report["empty_windows"] == 0
    # frame k's window holds exactly its event pixels: the signed count is the event channel again
    image = cv2.imread(str(root / "event" / "synth_000001.png"), cv2.IMREAD_UNCHANGED)
    with open(root / "event" / "events_report.json") as f:
        events = json.load(f)["windows"][1]["events"]
    assert events == int((image != 128).sum()) > 0
    out = tmp_path / "run"
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "Base-CADET.yaml"), *SMOKE,
        "MODEL.PIXEL_MEAN", "[74, 76, 75, 92, 128]", "CADET.DATA.ROOT", str(root), "OUTPUT_DIR", str(out),
        "DATASETS.TEST", "('synth_daytest1', 'synth_nighttest1')"])
    train_main(args)
    assert os.path.isfile(out / "model_final.pth")
    with open(out / "eval_metrics.json") as f:
        metrics = json.load(f)["datasets"]
    assert sorted(metrics) == ["synth_daytest1", "synth_nighttest1"] and all("AP50" in m for m in metrics.values())
    shutil.rmtree(out)
