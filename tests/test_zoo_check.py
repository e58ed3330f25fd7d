"""``scripts/zoo_check.py`` (issue 23, item 2) on a handful of hand-made files: the real CLI through the script finds
no violation on a clean run, and the script's checks catch each broken invariant when an output folder is broken on
purpose. The tiny test network keeps it fast."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "zoo_check.py"
TINY = ["--classifier", "tiny_classifier", "--steps", "2", "--attack-size", "48", "--through", "none"]
EXIF_ORIENTATION, ROTATED_90 = 0x0112, 6


def load_script():
    spec = importlib.util.spec_from_file_location("zoo_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_zoo(folder: Path) -> None:
    """Four photos' worth of cases: plain, alpha with transparent rows, EXIF-rotated, corrupt; and a non-photo."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "plain.png")
    rgba = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(np.arange(40)[:, None] < 10, 0, 200)  # 480 transparent pixels, the rest opaque-ish
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    rotated = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[EXIF_ORIENTATION] = ROTATED_90
    rotated.save(folder / "rotated.jpg", exif=exif, quality=95)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(200)))
    (folder / "notes.txt").write_text("not a photo")


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("zoo")
    make_zoo(root / "in")
    done = subprocess.run([sys.executable, str(SCRIPT), str(root / "in"), "--work", str(root / "work"), "--", *TINY],
                          capture_output=True, text=True, timeout=600)
    return root / "in", root / "work", done


def test_a_clean_run_keeps_every_invariant(zoo_run) -> None:
    folder, work, done = zoo_run
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((work / "zoo-check.json").read_text())
    assert result["counts"] == {"cloaked": 3, "failed": 1, "skipped": 1, "no record": 0}
    assert result["run_violations"] == [] and result["file_violations"] == {}
    assert [group["examples"] for group in result["failed_by_reason"]] == [["corrupt.jpg"]]
    assert result["skipped_by_reason"] == [{"reason": "not a photo (.txt)", "count": 1, "examples": ["notes.txt"]}]
    assert result["run"]["exit_code"] == 1 and 0 < result["run"]["peak_rss_mb"] < result["limits"]["max_rss_mb"]
    assert "| 5 | 3 | 1 | 1 | 0 | 1 |" in (work / "zoo-check.md").read_text()
    with Image.open(work / "out" / "rotated.jpg") as image:
        assert image.size == (40, 56)  # upright: the EXIF rotation applied


def broken_copy(zoo_run, root: Path) -> tuple[Path, Path, list[dict]]:
    """A copy of the run's inputs and outputs under ``root``, its records pointing at the copy (the run's own files
    stay as they were)."""
    folder, work, _ = zoo_run
    inputs, out = root / "in", root / "out"
    shutil.copytree(folder, inputs)
    out.mkdir()
    records = json.loads((work / "report.json").read_text())["photos"]
    for record in records:
        record["source"] = str(inputs / Path(record["source"]).relative_to(folder))
        if record.get("output"):
            copy = out / Path(record["output"]).name
            copy.write_bytes(Path(record["output"]).read_bytes())
            record["output"] = str(copy)
    (out / "comcloak-manifest.jsonl").write_text("")
    return inputs, out, records


def test_each_broken_invariant_is_found(zoo_run, tmp_path: Path) -> None:
    zoo = load_script()
    folder, out, records = broken_copy(zoo_run, tmp_path)
    files = zoo.list_files(folder)
    before = {str(path.relative_to(folder)): zoo.file_digest(path) for path in files}
    Image.open(out / "alpha.png").convert("RGB").save(out / "alpha.png")  # alpha dropped
    Image.open(out / "plain.png").resize((24, 20)).save(out / "plain.png")  # wrong size, other bytes
    (out / ".plain.png.x1y2.part").write_bytes(b"half a photo")  # debris
    (out / "corrupt.png").write_bytes(b"an output for a failed input")
    (folder / "notes.txt").write_text("changed")  # an input changed
    records.append(dict(records[0]))  # a second record for one input
    findings = zoo.Findings()
    matched = zoo.match_records(files, folder, records, tmp_path, findings)
    zoo.check_files(folder, out, matched, tmp_path, before, findings, 3.0)
    problems = {name: "; ".join(found) for name, found in findings.by_file.items()}
    assert "alpha dropped (480 transparent pixels in the input)" in problems["alpha.png"]
    assert "output 24x20, upright input 48x40" in problems["plain.png"]
    assert "differ from the recorded SHA-256" in problems["plain.png"]
    assert "failed, but an output was written: corrupt.png" in problems["corrupt.jpg"]
    assert "input changed by the run" in problems["notes.txt"]
    assert sum("2 records" in found for found in problems.values()) == 1
    assert "rotated.jpg" not in problems
    assert findings.run == ["debris in the output folder: .plain.png.x1y2.part"]
    (tmp_path / "stdout.txt").write_text("")
    (tmp_path / "stderr.txt").write_text("Traceback (most recent call last):\n  boom\n")
    zoo.check_run(zoo.RunResult(["comcloak"], 0, 1.0, 10.0), tmp_path, Counter(failed=1), "manifest", findings)
    assert findings.run[1:] == ["exit status 0 with 1 failed record(s) (expected 1)", "traceback in stderr (1x)",
                                "no --report written; records read from the manifest"]


def test_a_runaway_run_is_stopped_and_reported(zoo_run, tmp_path: Path) -> None:
    """The memory bound is enforced, not only measured: a child past --max-rss-mb is killed (as a run that hangs
    eating memory would be), and every input it left without a record is listed."""
    folder, _, _ = zoo_run
    done = subprocess.run([sys.executable, str(SCRIPT), str(folder), "--work", str(tmp_path / "work"),
                           "--max-rss-mb", "40", "--", *TINY], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    result = json.loads((tmp_path / "work" / "zoo-check.json").read_text())
    assert result["run"]["killed"] == "peak RSS over 40 MiB" and result["run"]["peak_rss_mb"] > 40
    assert "run stopped: peak RSS over 40 MiB" in result["run_violations"]
    assert result["records_from"] == "manifest" and result["counts"]["no record"] == 5
    assert set(result["file_violations"]) == {"plain.png", "alpha.png", "rotated.jpg", "corrupt.jpg", "notes.txt"}
