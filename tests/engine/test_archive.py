"""Archives without surprises (issue 14): the manifest, resume, the lock, crash safety with real SIGKILLs, fail-fast
paths and nothing silently dropped. Real files, real subprocesses, the tiny test network."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comcloak.attacks.presets import preset_config
from comcloak.cli.main import main
from comcloak.engine.manifest import LOCK_NAME, MANIFEST_NAME, Manifest, file_sha256, output_lock

# No stand-in: the archive is under test, not the attack (the default ComModel took ~3/4 of each run's time).
TINY = ["--classifier", "tiny_classifier", "--steps", "2", "--attack-size", "48", "--check", "none",
        "--through", "none"]


def _photos(folder: Path, count: int, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for index in range(count):
        path = folder / f"p{index:02d}.{'png' if index % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (size, size + index, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _latest(out: Path) -> dict[str, dict]:
    return Manifest(out).latest


def test_manifest_records_every_input_and_a_rerun_redoes_only_what_changed(tmp_path: Path, capsys) -> None:
    photos = _photos(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_text("not a photo")
    out, report = tmp_path / "out", tmp_path / "report.json"
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)
    assert code == 0
    latest = _latest(out)
    assert latest[str(tmp_path / "in" / "notes.txt")]["status"] == "skipped"
    records = [latest[str(path.resolve())] for path in photos]
    assert all(r["status"] == "cloaked" and r["output_sha256"] == file_sha256(out / r["output"]) for r in records)
    assert all(r["source_sha256"] == file_sha256(p) and r["source_size"] == p.stat().st_size
               for r, p in zip(records, photos))
    first_mtimes = [(out / r["output"]).stat().st_mtime_ns for r in records]

    Image.fromarray(np.zeros((70, 70, 3), np.uint8)).save(photos[1])  # one input changes
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "--report", str(report), *TINY], capsys)
    assert code == 0 and "2 by an earlier run, marked *" in stdout and "notes.txt" in stdout
    payload = json.loads(report.read_text())["photos"]
    by_name = {Path(r["source"]).name: r for r in payload}
    assert set(by_name) == {"p00.jpg", "p01.png", "p02.jpg", "notes.txt"}  # the whole archive, not just this run
    assert by_name["p00.jpg"]["resumed"] and by_name["p02.jpg"]["resumed"] and not by_name["p01.png"]["resumed"]
    assert by_name["p00.jpg"]["clean_label"] is not None and by_name["notes.txt"]["error"] == "not a photo (.txt)"
    mtimes = [Path(by_name[p.name]["output"]).stat().st_mtime_ns for p in photos]
    assert mtimes[0] == first_mtimes[0] and mtimes[2] == first_mtimes[2] and mtimes[1] != first_mtimes[1]

    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), *TINY, "--eps", "3"], capsys)
    assert code == 0 and "by an earlier run" not in stdout  # new settings: everything redone, own outputs replaced
    assert {r["settings_hash"] for r in _latest(out).values()} == {_latest(out)[str(photos[0].resolve())][
        "settings_hash"]}


def test_a_torn_manifest_line_is_dropped_and_the_run_goes_on(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0
    with open(out / MANIFEST_NAME, "a") as handle:
        handle.write('{"source": "/half-writ')  # a kill in the middle of an append
    assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def test_a_second_run_on_the_same_folder_stops_with_one_line(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    with output_lock(out):
        code, _, err = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)
    assert code == 2 and f"is writing to {out}" in err and "--wait" in err and err.count("\n") == 1
    assert not list(out.glob("*.jpg"))


def test_wait_waits_for_the_lock(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    released = threading.Event()

    def hold() -> None:
        with output_lock(out):
            time.sleep(1.0)
            released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    code, _, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", "--wait", *TINY], capsys)
    holder.join()
    assert code == 0 and released.is_set() and (out / "p00.jpg").exists()


def test_only_comcloaks_own_temp_files_are_removed_under_the_lock(tmp_path: Path, capsys) -> None:
    """Issue 23: user files named ``.NAME.part`` stay; comcloak's temp names, and an older comcloak's beside an output
    its manifest records, go."""
    _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0  # records out/p00.jpg
    (out / "deep").mkdir()
    (out / "in").mkdir()
    stale = [out / ".comcloak-abcd_123.part", out / "deep" / ".comcloak-zz99zz99.part", out / ".p00.jpg.abc12345.part"]
    users = [out / ".user.part", out / "in" / ".notes.part", out / ".notes.jpg.abc12345.part", out / "unrelated.part",
             out / ".comcloak-notes.part"]
    for path in stale + users:
        path.write_bytes(b"half a photo")
    assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0
    assert not any(path.exists() for path in stale) and all(path.exists() for path in users)


@pytest.mark.parametrize("case", ["folder", "unwritable"])
def test_report_paths_fail_before_any_work(tmp_path: Path, capsys, case: str) -> None:
    if case == "unwritable" and os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    _photos(tmp_path / "in", 1)
    report = tmp_path / "reports"
    report.mkdir()
    if case == "unwritable":
        report.chmod(0o500)
        report = report / "r.json"
    code, _, err = _cli(["cloak", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--report", str(report), *TINY],
                        capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_report_in_a_read_only_file_fails_before_any_work(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "in", 1)
    report = tmp_path / "r.json"
    report.write_text("{}")
    report.chmod(0o400)
    if os.access(report, os.W_OK):
        pytest.skip("this user writes read-only files (root)")
    code, _, err = _cli(["cloak", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--report", str(report), *TINY],
                        capsys)
    assert code == 2 and "read-only" in err and not (tmp_path / "out").exists()


def test_sigkill_at_random_moments_then_a_rerun_completes_the_archive(tmp_path: Path) -> None:
    """A real ``comcloak cloak`` subprocess killed with SIGKILL at random moments (a write included, often: each
    photo is small, so writes are a large share of the time); a rerun completes the archive with no debris and a
    manifest whose every photo is cloaked with the hash of its output on disk."""
    photos = _photos(tmp_path / "in", 10)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "comcloak", "cloak", str(tmp_path / "in"), "-o", str(out), "-q",
               "--batch-size", "1", *TINY]
    rng = random.Random(3)
    manifest = out / MANIFEST_NAME
    for lines_before_kill in (2, 7, 13):  # each photo appends a 'writing' mark and its record
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline and \
                (not manifest.exists() or len(manifest.read_bytes().splitlines()) < lines_before_kill):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.15))  # somewhere in the next photo: its attack, its write or its record
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL  # killed mid-archive, not finished
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    latest = _latest(out)
    for photo in photos:
        record = latest[str(photo.resolve())]
        assert record["status"] == "cloaked", record
        assert file_sha256(out / record["output"]) == record["output_sha256"]
        with Image.open(out / record["output"]) as image:
            image.load()
    assert (out / LOCK_NAME).exists()


def test_closing_table_keeps_its_columns_with_failures_newlines_and_wide_names() -> None:
    from comcloak.engine.pipeline import PhotoRecord
    from comcloak.engine.report import _display_width, format_table

    records = [
        PhotoRecord(source="/in/猫の写真.jpg", status="cloaked", width=64, height=48, clean_check_label=281,
                    check_label=282, success=True, protected_on={"a": True}, cloaked_label=1, psnr_db=38.0),
        PhotoRecord(source="/in/two\nlines.jpg", status="failed", error="/in/two\nlines.jpg: not a readable image"),
        PhotoRecord(source="/in/notes.txt", status="skipped", error="not a photo (.txt)"),
    ]
    lines = format_table(records, "facebook").splitlines()
    table = lines[1:6]
    header_width = _display_width(table[0])
    assert all(_display_width(line) <= header_width for line in table[1:])  # no row widened by an error message
    assert "two\\nlines.jpg" in table[3] and table[3].split()[-3] == "failed"
    assert "failed: /in/two\\nlines.jpg: not a readable image" in lines  # the path once
    assert "skipped: /in/notes.txt: not a photo (.txt)" in lines
    assert lines[-1] == "1 cloaked, 1 protected after facebook (attacker's crop view), 1 skipped, 1 failed"


def test_a_file_named_like_an_option_gets_a_hint(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path, 1)
    (tmp_path / "p00.jpg").rename(tmp_path / "-dash.jpg")
    code, _, err = _cli(["cloak", "-dash.jpg", "-o", "out", *TINY], capsys)
    assert code == 2 and "put file names that start with '-' after --" in err
    code, _, _ = _cli(["cloak", "-o", "out", "-q", *TINY, "--", "-dash.jpg"], capsys)
    assert code == 0 and (tmp_path / "out" / "-dash.jpg").exists()


def test_high_bit_depth_photos_are_cloaked_not_destroyed(tmp_path: Path, capsys) -> None:
    """The issue's zoo: 16-bit greyscale PNG, 32-bit integer and float TIFF were written all white or all black and
    reported cloaked; now each output is a greyscale photo of the same scene within the cloak's budget."""
    import tifffile

    folder = tmp_path / "in"
    folder.mkdir()
    ramp = np.tile(np.linspace(0.1, 0.9, 72), (64, 1))  # a mid-grey ramp
    Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)).save(folder / "grey16.png")
    tifffile.imwrite(folder / "int32.tif", np.rint(ramp * 4_000_000).astype(np.int32))
    tifffile.imwrite(folder / "float.tif", ramp.astype(np.float32))
    report = tmp_path / "r.json"
    code, _, _ = _cli(["cloak", str(folder), "-o", str(tmp_path / "out"), "-q", "--report", str(report), *TINY],
                      capsys)
    assert code == 0
    expected = {"grey16.png": ramp * 255, "float.tif": ramp * 255,  # nominal ranges
                "int32.tif": ramp / ramp.max() * 255}  # its real range: 0 to the highest value present
    for record in json.loads(report.read_text())["photos"]:
        assert record["status"] == "cloaked" and record["notes"], record
        with Image.open(record["output"]) as image:
            assert image.mode == "L"
            pixels = np.asarray(image).astype(float)
        error = np.abs(pixels - expected[Path(record["source"]).name]).max()
        # the preset's eps, plus the rounding of the scaling and of the luma
        assert error <= preset_config().eps_255 + 1.5, record["source"]


def test_resume_does_not_depend_on_the_working_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    _photos(tmp_path / "in", 1)
    monkeypatch.chdir(tmp_path)
    assert _cli(["cloak", "in", "-o", "out", "-q", *TINY], capsys)[0] == 0
    assert all(not Path(r["output"]).is_absolute() for r in _latest(tmp_path / "out").values() if r["output"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, stdout, _ = _cli(["cloak", "../in", "-o", "../out", *TINY], capsys)
    assert code == 0 and "1 by an earlier run" in stdout


def test_a_manifest_that_cannot_be_read_stops_before_any_work(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).mkdir()  # a folder where the manifest should be
    code, _, err = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)
    assert code == 2 and "cannot use the manifest" in err and err.count("\n") == 1
    assert not (out / "p00.jpg").exists()


def test_a_rerun_trusts_unchanged_size_and_time_and_rehashes_the_rest(tmp_path: Path, capsys, monkeypatch) -> None:
    """A rerun over an unchanged archive reads no photo again (size and modification time as recorded, like make
    and rsync); an output changed behind its back (other bytes, other time) is detected and redone."""
    import comcloak.engine.manifest as manifest

    photos = _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0
    hashed: list[str] = []
    real = manifest.file_sha256

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(manifest, "file_sha256", counting)  # the one place files are hashed
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), *TINY], capsys)
    assert code == 0 and "2 by an earlier run" in stdout and hashed == []
    output = out / _latest(out)[str(photos[0].resolve())]["output"]
    output.write_bytes(output.read_bytes()[::-1])  # tampered output
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), *TINY], capsys)
    assert code == 0 and "1 by an earlier run" in stdout
    with Image.open(output) as image:
        image.load()  # a real photo again
