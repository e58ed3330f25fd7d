"""Atomic writes: all or nothing, and the permissions a plainly created file would get."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import comcloak.atomic as atomic
from comcloak.atomic import atomic_move, atomic_writer, default_file_mode


def test_written_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    target = tmp_path / "out.bin"
    with atomic_writer(target) as handle:
        handle.write(b"payload")
    assert target.read_bytes() == b"payload"
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == default_file_mode()


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_a_finished_file_is_moved_in_durably(tmp_path: Path, monkeypatch) -> None:
    """atomic_move (the exported step graphs' cache): the file's bytes and then its folder's entry reach the disk
    (fsync of the file before the rename, of the folder after), and the destination is replaced whole."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(atomic.os, "fsync", recording_fsync)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "step.onnx").write_bytes(b"graph")
    target = tmp_path / "cache" / "step.onnx"
    target.parent.mkdir()
    target.write_bytes(b"old graph")
    atomic_move(scratch / "step.onnx", target)
    assert target.read_bytes() == b"graph" and not (scratch / "step.onnx").exists()
    assert synced[0] == str(scratch / "step.onnx") and synced[-1] == str(target.parent)
    assert stat.S_IMODE(target.stat().st_mode) == default_file_mode()
