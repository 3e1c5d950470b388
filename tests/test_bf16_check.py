"""The bf16 advice of CPU training (cadet_d2/engine/bf16_check.py): the configured model's step
measured once per machine and model, cached in the user's cache folder, bypassed by config."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from cadet_d2.engine import bf16_check, precision
from cadet_d2.engine.bf16_check import bf16_advice, bf16_speed, cache_key, cache_path, measure_bf16_speed
from cadet_d2.engine.precision import resolve_precision
from conftest import tiny_cfg

BF16 = ["SOLVER.AMP.ENABLED", "True", "CADET.SOLVER.AMP_DTYPE", "bfloat16"]
SMALL = ["MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "8"]


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_measure(monkeypatch):
    """measure_bf16_speed replaced by a counter returning ``speeds[-1]``."""
    calls: list[int] = []
    speeds = [1.8]

    def measure(cfg, *a, **k):
        calls.append(1)
        return {"speed": speeds[-1], "fp32_s": 1.0, "bf16_s": 1.0 / speeds[-1], "seconds": 0.1, "size": [160, 224]}
    monkeypatch.setattr(bf16_check, "measure_bf16_speed", measure)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    return calls, speeds


def test_measure_runs_the_configured_models_step_in_both_precisions(tmp_path):
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *SMALL)
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    r = measure_bf16_speed(cfg, 64, 96, rounds=1, warmup=0)
    assert torch.equal(torch.rand(2), expected)  # the caller's random stream is untouched
    assert math.isfinite(r["speed"]) and r["speed"] > 0 and r["fp32_s"] > 0 and r["bf16_s"] > 0
    assert r["speed"] == pytest.approx(r["fp32_s"] / r["bf16_s"]) and r["size"] == [64, 96]


def test_cache_is_keyed_by_cpu_torch_and_model_and_bypassable(tmp_path, cache_home, fake_measure):
    calls, speeds = fake_measure
    cfg = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *BF16)
    first = bf16_speed(cfg)
    assert first["speed"] == 1.8 and first["cached"] is False and len(calls) == 1
    assert cache_path() == str(cache_home / "cadet_d2" / "bf16_speed.json")
    stored = json.loads((cache_home / "cadet_d2" / "bf16_speed.json").read_text())
    key = cache_key(cfg)
    assert list(stored) == [key] and f"torch {torch.__version__}" in key and "MiT-b0" in key
    again = bf16_speed(cfg)
    assert again["speed"] == 1.8 and again["cached"] is True and len(calls) == 1  # once per machine
    speeds.append(0.7)
    assert bf16_speed(cfg, mode="measure")["speed"] == 0.7 and len(calls) == 2  # bypass: measured again
    assert bf16_speed(cfg)["speed"] == 0.7 and len(calls) == 2  # ... and cached
    off = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *BF16, "CADET.SOLVER.BF16_CHECK", "off")
    assert bf16_speed(off) is None and len(calls) == 2
    other = tiny_cfg(str(tmp_path), str(tmp_path / "o"), *BF16, "MODEL.FPN.OUT_CHANNELS", "64")
    assert bf16_speed(other, measure=False) is None and len(calls) == 2  # another model: no entry yet
    bf16_speed(other)
    assert len(calls) == 3 and len(json.loads((cache_home / "cadet_d2" / "bf16_speed.json").read_text())) == 2


def test_without_native_bf16_nothing_is_measured(tmp_path, cache_home, fake_measure):
    calls, _ = fake_measure
    entry = bf16_speed(tiny_cfg(str(tmp_path), str(tmp_path / "o"), *BF16), native=False)
    assert entry == {"speed": None, "native": False} and calls == []


def test_unreadable_cache_is_measured_again(tmp_path, cache_home, fake_measure, caplog):
    calls, _ = fake_measure
    (cache_home / "cadet_d2").mkdir(parents=True)
    (cache_home / "cadet_d2" / "bf16_speed.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="cadet_d2"):
        assert bf16_speed(tiny_cfg(str(tmp_path), str(tmp_path / "o"), *BF16))["speed"] == 1.8
    assert len(calls) == 1 and "unreadable" in caplog.text


def test_advice_warns_where_slower_and_is_silent_where_faster():
    slow = bf16_advice({"speed": 0.8, "native": True, "cached": True}, bf16_configured=True)
    assert slow[0] == logging.WARNING and "0.80x fp32's speed" in slow[1] and "SOLVER.AMP.ENABLED False" in slow[1]
    assert bf16_advice({"speed": 1.9, "native": True}, bf16_configured=True) is None
    hint = bf16_advice({"speed": 1.9, "native": True}, bf16_configured=False)
    assert hint[0] == logging.INFO and "bf16 would be 1.90x faster here" in hint[1]
    assert bf16_advice({"speed": 1.05, "native": True}, bf16_configured=False) is None  # not clearly faster
    assert bf16_advice({"speed": 0.8, "native": True}, bf16_configured=False) is None
    emulated = bf16_advice({"speed": None, "native": False}, bf16_configured=True)
    assert emulated[0] == logging.WARNING and "no native bf16" in emulated[1]
    assert bf16_advice({"speed": None, "native": False}, bf16_configured=False) is None
    assert bf16_advice(None, bf16_configured=True) is None


@pytest.mark.parametrize("speed", [0.5, 1.9])
def test_resolve_precision_logs_the_advice(tmp_path, cache_home, fake_measure, caplog, speed):
    calls, speeds = fake_measure
    speeds.append(speed)
    with caplog.at_level(logging.INFO, logger="cadet_d2"):
        assert resolve_precision(tiny_cfg(str(tmp_path), str(tmp_path / "o"), *BF16)).name == "bf16"
        bf16_lines = [r for r in caplog.records if "bf16 autocast ran at" in r.getMessage()]
        caplog.clear()
        assert resolve_precision(tiny_cfg(str(tmp_path), str(tmp_path / "o"))).name == "fp32"  # from the cache
        hints = [r for r in caplog.records if "bf16 would be" in r.getMessage()]
    assert len(calls) == 1
    assert len(bf16_lines) == (1 if speed < 1 else 0) and len(hints) == (1 if speed > 1 else 0)
    resolve_precision(tiny_cfg(str(tmp_path), str(tmp_path / "o"), *BF16), advise=False)
    assert len(calls) == 1


def test_check_mode_is_validated(tmp_path):
    with pytest.raises(ValueError, match="BF16_CHECK"):
        tiny_cfg(str(tmp_path), str(tmp_path / "o"), "CADET.SOLVER.BF16_CHECK", "sometimes")
