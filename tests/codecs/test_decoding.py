"""Decoding hostile files (issue 23): Pillow's warnings are notes and never change control flow, and each file is
decoded in a worker under a per-file time and memory budget, so a file fails alone; on hand-made files
(tests/codecs/hostile_files.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import hostile_files
import numpy as np
import pytest
from PIL import Image

from comcloak.codecs import decode_worker
from comcloak.codecs.decoding import decode_photo
from comcloak.codecs.photos import PhotoError, load_photo, read_header

posix_only = pytest.mark.skipif(not decode_worker.ISOLATED, reason="the decoding worker needs select() on pipes")


def test_a_pillow_warning_is_a_note_not_a_hang(tmp_path: Path) -> None:
    """Corrupt EXIF and a bad TIFF tag made load_photo loop forever, re-issuing each warning into the list it read;
    run where a regression fails (a time and memory limit) instead of taking the test run down."""
    jpeg, tiff = hostile_files.bad_exif_jpeg(tmp_path / "bad.jpg"), hostile_files.warning_tiff(tmp_path / "bad.tif")
    code = ("import json, sys, resource\n"
            "resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, resource.RLIM_INFINITY))\n"
            "from comcloak.codecs.photos import load_photo\n"
            "print(json.dumps([list(load_photo(path).notes) for path in sys.argv[1:]]))\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code, str(jpeg), str(tiff)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    jpeg_notes, tiff_notes = json.loads(done.stdout)
    assert jpeg_notes == ["Pillow warned: Corrupt EXIF data.  Expecting to read 12 bytes but only got 2."]
    assert tiff_notes == ["Pillow warned: Metadata Warning, tag 296 had too many entries: 2, expected 1"]
    assert done.stderr == ""  # captured, not printed


def test_warnings_are_captured_per_file_even_under_w_error(tmp_path: Path) -> None:
    jpeg = hostile_files.bad_exif_jpeg(tmp_path / "bad.jpg")
    filters_before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping, or raised, would fail here
        photo = decode_photo(jpeg)  # in this process: what the worker runs
        clean = decode_photo(hostile_files.trns_png(tmp_path / "clean.png", "RGB")[0])
    assert photo.notes == ("Pillow warned: Corrupt EXIF data.  Expecting to read 12 bytes but only got 2.",)
    assert clean.notes == ()  # nothing carried over from the file before
    assert warnings.filters == filters_before


@posix_only
def test_a_decode_past_the_time_limit_fails_that_file_and_the_next_decodes(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    slow = tmp_path / "slow.png"
    Image.new("L", (4000, 4000)).save(slow)  # 16 MP: far more than 20 ms to decode and send back
    small = hostile_files.trns_png(tmp_path / "small.png", "L")[0]
    load_photo(small)  # a warm worker: the limit is on decoding, not on starting Python
    monkeypatch.setattr(decode_worker, "DEFAULT_BUDGET", decode_worker.DecodeBudget(seconds=0.02))
    with pytest.raises(PhotoError) as raised:
        load_photo(slow)
    assert raised.value.reason == "decoding took longer than 0.02 s (the per-file limit); stopped"
    monkeypatch.undo()
    assert load_photo(small).pixels.shape == (48, 48, 3)


@posix_only
def test_memory_budget_refuses_before_decoding_and_bounds_the_decode(tmp_path: Path) -> None:
    large = tmp_path / "large.png"
    Image.new("RGB", (2000, 2000)).save(large)
    with pytest.raises(PhotoError) as raised:
        load_photo(large, budget=decode_worker.DecodeBudget(memory_bytes=16 * 10**6))
    assert raised.value.reason == ("decoding it needs about 80 MB (2000x2000 RGB), more than the per-file memory "
                                   "budget of 16 MB")
    deep = tmp_path / "deep.png"  # 16-bit: the estimate (2 bytes a pixel) passes, the float64 scaling does not
    Image.fromarray(np.zeros((3000, 3000), np.uint16)).save(deep)
    with pytest.raises(PhotoError) as raised:
        load_photo(deep, budget=decode_worker.DecodeBudget(memory_bytes=120 * 10**6))
    assert raised.value.reason == "ran out of the per-file memory budget (120 MB) decoding it"
    assert load_photo(deep).pixels.shape == (3000, 3000, 3)  # a fresh worker, the default budget


@posix_only
def test_a_decoder_crash_fails_only_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = hostile_files.trns_png(tmp_path / "photo.png", "RGB")[0]
    decode_worker.close_idle_workers()
    crashing = ("import os, signal, sys; sys.stdout.buffer.write(b'R'); sys.stdout.flush(); "
                "sys.stdin.buffer.read(8); os.kill(os.getpid(), signal.SIGSEGV)")
    monkeypatch.setattr(decode_worker, "_WORKER_CODE", crashing)
    with pytest.raises(PhotoError) as raised:
        load_photo(photo)
    assert raised.value.reason == ("the decoder stopped on SIGSEGV (a crash in the image library, or out of "
                                   "memory); not decoded")
    monkeypatch.undo()
    assert load_photo(photo).pixels.shape == (48, 48, 3)


def test_a_bomb_header_is_refused_without_decoding(tmp_path: Path) -> None:
    path = hostile_files.bomb_png(tmp_path / "bomb.png")
    for read in (read_header, load_photo):
        with pytest.raises(PhotoError, match=r"refused as a possible decompression bomb \(Image size \(2500000000 "):
            read(path)


def test_a_png_header_is_read_without_decoding_its_pixels(tmp_path: Path) -> None:
    """A PNG whose header says 10000x8000 and whose pixels are missing: the header read gives the size (the server's
    413 check and the archive's planning rely on it) instead of decoding, which fails on the missing data."""
    path = hostile_files.bomb_png(tmp_path / "big.png", width=10000, height=8000)
    header = read_header(path)
    assert (header.width, header.height) == (10000, 8000)
    with pytest.raises(PhotoError, match="corrupt image|truncated"):
        load_photo(path)
