"""tools/show_metrics.py: the tables of metrics files written by ``write_metrics``."""
from __future__ import annotations

import importlib.util
import os

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
