"""Archives under abuse (issue 23): a --report that would replace an input, a full disk, hand-edited manifests, moved
and copied output folders, symlinks into the output folder, names of NAME_MAX bytes and names carrying terminal
escapes. Real files, real tmpfs mounts or RLIMIT_FSIZE, real subprocesses, the tiny test network."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_archive import TINY, _cli, _latest, _photos

from comcloak.engine.manifest import MANIFEST_NAME, Manifest, ManifestWriteError


def _command(inputs: list[Path], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "comcloak", "cloak", *map(str, inputs), "-o", str(out), "-q", *TINY, *extra]


@pytest.mark.parametrize("case", ["input photo", "new file in an input folder", "other file", "an output"])
def test_a_report_that_would_replace_anything_but_a_report_is_refused(tmp_path: Path, capsys, case: str) -> None:
    photos = _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    if case == "an output":
        assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0
    report = {"input photo": photos[1], "new file in an input folder": tmp_path / "in" / "report.json",
              "other file": tmp_path / "notes.txt", "an output": out / photos[0].name}[case]
    if case == "other file":
        report.write_text("my notes")
    before = report.read_bytes() if report.exists() else None
    manifest = (out / MANIFEST_NAME).read_bytes() if out.exists() else None
    code, _, err = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", "--report", str(report), *TINY],
                        capsys)
    assert code == 2 and "--report" in err and err.count("\n") == 1, err
    assert (report.read_bytes() if report.exists() else None) == before
    assert ((out / MANIFEST_NAME).read_bytes() if out.exists() else None) == manifest  # nothing was done


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A real 600 KB tmpfs (needs root and a mount command), unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); the RLIMIT_FSIZE test covers the manifest")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with one file, then give ``leave`` bytes back."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(descriptor)
    while leave > 0:  # the last chunk may have gone in partly: take whole chunks back
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - min(leave, 65536)))
        leave -= 65536
    return filler


def test_a_full_disk_at_the_start_is_one_line_and_exit_2(tmp_path: Path, small_disk: Path) -> None:
    _photos(tmp_path / "in", 1)
    out = small_disk / "out"
    out.mkdir()
    _fill(small_disk)
    result = subprocess.run(_command([tmp_path / "in"], out), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "No space left on device" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("room", [16 * 1024, 48 * 1024])  # the manifest's next page fails first; a photo's does
def test_a_disk_that_fills_during_the_run_fails_cleanly_and_a_rerun_completes(tmp_path: Path, small_disk: Path,
                                                                              room: int) -> None:
    photos = _photos(tmp_path / "in", 8)
    out = small_disk / "out"
    filler = _fill(small_disk, leave=room)  # room for a photo or three and their manifest pages, not for eight
    result = subprocess.run(_command([tmp_path / "in"], out, "--batch-size", "1"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in result.stderr
    assert not [path for path in out.rglob("*") if path.name.endswith(".part")]
    assert all(json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines())  # whole records only
    filler.unlink()
    rerun = subprocess.run(_command([tmp_path / "in"], out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert all(_latest(out)[str(photo.resolve())]["status"] == "cloaked" for photo in photos)


def test_a_manifest_append_that_crosses_into_a_full_page_is_cut_back(small_disk: Path) -> None:
    manifest = Manifest(small_disk)
    manifest.open()
    manifest.append({"source": "/in/first.jpg", "status": "cloaked"})
    _fill(small_disk)
    with pytest.raises(ManifestWriteError, match="No space left on device"):
        for index in range(10_000):  # the manifest's last page fills, then the next append needs a page
            manifest.append({"source": f"/in/{index}.jpg", "status": "failed", "error": "x" * 300})
    manifest.close()  # nothing buffered is left to fail here
    lines = manifest.path.read_text().splitlines()
    assert lines and all(json.loads(line) for line in lines) and len(Manifest(small_disk).latest) == len(lines)


def test_a_manifest_over_rlimit_fsize_stops_the_run_with_one_line(tmp_path: Path) -> None:
    """Without root: RLIMIT_FSIZE stops the manifest from growing past 8 KB (EFBIG), photos (~3 KB) still fit."""
    photos = _photos(tmp_path / "in", 10, size=40)
    out = tmp_path / "out"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    result = subprocess.run(_command([tmp_path / "in"], out, "--batch-size", "1"), capture_output=True, text=True,
                            timeout=300, preexec_fn=limit)
    assert result.returncode == 2 and "cannot record in" in result.stderr and "File too large" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines())
    assert not [path for path in out.rglob("*") if path.name.endswith(".part")]
    rerun = subprocess.run(_command([tmp_path / "in"], out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert all(_latest(out)[str(photo.resolve())]["status"] == "cloaked" for photo in photos)


def test_malformed_manifest_lines_are_ignored_with_one_warning(tmp_path: Path, capsys, caplog) -> None:
    photos = _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0
    good = _latest(out)[str(photos[0].resolve())]
    bad = [{"source": ["x"]}, {**good, "output": 5}, {**good, "psnr_db": "abc"}, {**good, "width": True},
           {**good, "protected_on": {"tiny_classifier": "yes"}}, [1, 2], "text"]
    with open(out / MANIFEST_NAME, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in bad))
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), *TINY], capsys)
    assert code == 0 and "2 by an earlier run" in stdout  # the good records before them still stand
    warnings = [record.getMessage() for record in caplog.records if "malformed" in record.getMessage()]
    assert len(warnings) == 1 and "ignored 7 malformed lines" in warnings[0] and "'source' is not a string" in \
        warnings[0]


@pytest.mark.parametrize("recorded", ["absolute", "relative"])
def test_an_output_recorded_outside_the_folder_is_never_trusted(tmp_path: Path, capsys, monkeypatch,
                                                                recorded: str) -> None:
    _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0
    inside, outside = out / "p00.jpg", tmp_path / "elsewhere" / "p00.jpg"
    outside.parent.mkdir()
    shutil.copy2(inside, outside)  # the same bytes and modification time
    inside.unlink()
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    edited = [{**record, "output": str(outside) if recorded == "absolute" else "../elsewhere/p00.jpg"}
              if record.get("output") else record for record in map(json.loads, lines)]
    (out / MANIFEST_NAME).write_text("".join(json.dumps(record) + "\n" for record in edited))
    monkeypatch.chdir(out)  # where a relative path would have been looked up
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(out), *TINY], capsys)
    assert code == 0 and "by an earlier run" not in stdout and inside.exists()


@pytest.mark.parametrize("manifest", ["current", "older, absolute outputs"])
def test_a_moved_or_copied_output_folder_resumes_against_its_own_files(tmp_path: Path, capsys,
                                                                       manifest: str) -> None:
    _photos(tmp_path / "in", 3)
    out, moved, copied = tmp_path / "out", tmp_path / "out2", tmp_path / "out3"
    assert _cli(["cloak", str(tmp_path / "in"), "-o", str(out), "-q", *TINY], capsys)[0] == 0
    if manifest != "current":  # as comcloak wrote it before outputs were relative
        records = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
        (out / MANIFEST_NAME).write_text("".join(json.dumps({**record, "manifest_version": 1, "output": str(
            out / record["output"]) if record.get("output") else None}) + "\n" for record in records))
    out.rename(moved)  # mv out out2
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(moved), *TINY], capsys)
    assert code == 0 and "3 by an earlier run" in stdout and "0 skipped, 0 failed" in stdout
    shutil.copytree(moved, copied, copy_function=shutil.copy2)  # cp -a out2 out3
    (copied / "p00.jpg").unlink()
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(copied), *TINY], capsys)
    assert code == 0 and "2 by an earlier run" in stdout and (copied / "p00.jpg").exists()


@pytest.mark.parametrize("target", ["the output", "inside it", "a folder holding it"])
def test_a_symlink_from_an_input_to_the_output_is_refused_on_the_first_run(tmp_path: Path, capsys,
                                                                           target: str) -> None:
    _photos(tmp_path / "in1", 1)
    _photos(tmp_path / "in2", 1)
    holder = tmp_path / "holder"
    holder.mkdir()
    out = holder / "outX"
    link = tmp_path / "in2" / "link"
    link.symlink_to({"the output": out, "inside it": out / "sub", "a folder holding it": holder}[target],
                    target_is_directory=True)  # dangling but for the holder: the output does not exist yet
    argv = ["cloak", str(tmp_path / "in1"), str(tmp_path / "in2"), "-o", str(out), "--follow-symlinks", "-q", *TINY]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and f"input {tmp_path / 'in2'} reaches the output folder" in err and str(link) in err, err
    assert not out.exists()
    (out / "sub").mkdir(parents=True)  # an existing output folder: the same
    code, _, err = _cli(argv, capsys)
    assert code == 2 and f"input {tmp_path / 'in2'} reaches the output folder" in err


def test_table_rows_of_symlinked_photos_show_the_links_name(tmp_path: Path, capsys) -> None:
    [real] = _photos(tmp_path / "elsewhere", 1)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "alias.jpg").symlink_to(real)
    code, stdout, _ = _cli(["cloak", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *TINY], capsys)
    assert code == 0 and (tmp_path / "out" / "alias.jpg").exists()
    rows = [line for line in stdout.splitlines() if "64x64" in line]
    assert len(rows) == 1 and rows[0].startswith("alias.jpg") and real.name not in stdout


def test_a_name_of_253_bytes_is_cloaked(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    name = "猫" * 83 + ".png"
    assert len(name.encode()) == 253  # NAME_MAX is 255: no room for a temp name built around it
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / name)
    code, _, err = _cli(["cloak", str(folder), "-o", str(tmp_path / "out"), "-q", *TINY], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / name).exists() and not list((tmp_path / "out").glob("*.part"))


def test_terminal_escapes_in_names_are_escaped_in_every_line_and_paths_said_once(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "in", 1)
    evil = tmp_path / "in" / "\x1b[2Jevil\rforged.png"
    evil.write_bytes(b"not a png")
    for quiet in (["-q"], []):
        code, stdout, err = _cli(["cloak", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *quiet, *TINY], capsys)
        printed = stdout + err if quiet else stdout  # without -q, stderr is the progress bar's (its own \r)
        assert code == 1 and "\x1b" not in printed + err and "\r" not in printed
        [line] = [line for line in printed.splitlines() if line.startswith("failed:")]
        assert "\\x1b[2Jevil\\rforged.png" in line and line.count("evil") == 1, line
    code, _, err = _cli(["cloak", str(tmp_path / "in" / "\x1b[2Jgone.jpg"), "-o", str(tmp_path / "o2"), *TINY],
                        capsys)
    assert code == 2 and "\x1b" not in err and "\\x1b[2Jgone.jpg: input not found" in err
