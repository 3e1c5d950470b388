"""tools/show_metrics.py: the tables of metrics files written by ``write_metrics``."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from cadet_d2.evaluation.coco import write_metrics

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "show_metrics.py")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("show_metrics_cli", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tables_with_nan_and_conditions(tool, tmp_path, capsys):
    path = str(tmp_path / "eval_metrics.json")
    metrics = {"synth_test": {"AP": 41.234, "AP50": 80.0, "AP75": 40.5, "APs": float("nan"), "APm": 30.0,
                              "APl": 50.0}}
    conditions = [{"name": "-rgb (zero)", "datasets": {"synth_test": {"AP": 12.5, "AP50": float("nan")}}}]
    write_metrics(path, metrics, weights="out/model_final.pth", conditions=conditions)
    text = tool.main([path])
    assert capsys.readouterr().out == text + "\n"
    lines = text.splitlines()
    assert lines[0] == f"{path}  (weights: out/model_final.pth)"
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    assert header == ["dataset", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row == ["synth_test", "41.23", "80.00", "40.50", "nan", "30.00", "50.00"]  # null read back as nan
    cond_header = next(line for line in lines if line.startswith("| condition"))
    assert [c.strip() for c in cond_header.strip("|").split("|")] == [
        "condition", "synth_test AP", "synth_test AP50"]
    assert [c.strip() for c in lines[-1].strip("|").split("|")] == ["-rgb (zero)", "12.50", "nan"]


def test_several_files_without_weights(tool, tmp_path):
    paths = []
    for i, ap in enumerate((10.0, 20.0)):
        paths.append(str(tmp_path / f"run{i}.json"))
        write_metrics(paths[-1], {f"set{i}": {"AP": ap}})
    text = tool.main(paths)
    titles = [line for line in text.splitlines() if line.startswith(str(tmp_path))]
    assert titles == [f"{paths[0]}  (weights: -)", f"{paths[1]}  (weights: -)"]
    assert "| set0      | 10.00 |" in text and "| set1      | 20.00 |" in text
    assert "condition" not in text


@pytest.mark.parametrize("text,message", [
    ('{"datasets": {"a": {"AP": 1.0}}\n,,', r"bad\.json: line 2: not JSON"),
    ('{"AP": 1.0}', r'bad\.json: no "datasets" object'),
])
def test_bad_file_named(tool, tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        tool.main([str(path)])


def test_missing_file_named(tool, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        tool.main([str(tmp_path / "nope.json")])


def test_run_folder_and_iterations(tool, tmp_path):
    write_metrics(str(tmp_path / "eval_metrics.json"), {"synth_test": {"AP": 30.0}},
                  weights=str(tmp_path / "model_final.pth"), trained_iterations=300, machine="CPU A (AVX2), 2 CPUs")
    text = tool.main([str(tmp_path)])  # a run folder: its eval_metrics.json
    assert text.splitlines()[0] == f"{tmp_path / 'eval_metrics.json'}  (weights: {tmp_path / 'model_final.pth'}, " \
                                   "after 300 iterations; on CPU A (AVX2), 2 CPUs)"
    assert "| synth_test | 30.00 |" in text


def test_detectron2_training_metrics(tool, tmp_path):
    """Detectron2's metrics.json (one JSON object per line): a table per evaluation during training;
    a single test set's flattened keys ("bbox/AP") get its name from the config.yaml beside it."""
    lines = [{"iteration": 19, "total_loss": 1.5, "lr": 0.01},
             {"iteration": 19, "a/bbox/AP": 10.0, "a/bbox/AP50": None, "b/bbox/AP": 20.0},
             {"iteration": 40, "a/bbox/AP": 15.0, "b/bbox/AP": 25.0, "b/miss_rate/MR-2 all": 60.0}]
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    text = tool.main([str(path)])
    assert text.splitlines()[:2] == [f"{path}  (evaluations during training)", "iteration 19 (Detectron2's count)"]
    assert "| a         | 10.00 |    nan |" in text and "| b         | 25.00 |" in text
    assert text.count("iteration 40 (Detectron2's count)") == 1 and "MR-2 all" in text

    one = tmp_path / "one"
    one.mkdir()
    (one / "config.yaml").write_text("DATASETS:\n  TEST:\n  - synth_nighttest1\n")
    (one / "metrics.json").write_text(json.dumps({"iteration": 4, "bbox/AP": 5.0}) + "\n")
    assert "| synth_nighttest1 | 5.00 |" in tool.main([str(one / "metrics.json")])

    (one / "metrics.json").write_text(json.dumps({"iteration": 4, "total_loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.json: Detectron2's training metrics without any evaluation"):
        tool.main([str(one / "metrics.json")])


def test_folder_without_metrics_is_an_error_not_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, TOOL, str(tmp_path)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(TOOL))))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "eval_metrics.json" in r.stderr, r.stderr


def test_unreadable_metrics_file_is_an_error_not_a_traceback(tmp_path):
    (tmp_path / "eval_metrics.json").mkdir()  # an OSError that is not FileNotFoundError
    r = subprocess.run([sys.executable, TOOL, str(tmp_path)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(TOOL))))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Is a directory" in r.stderr, r.stderr
