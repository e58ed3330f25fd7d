"""The archive's memory: ``comcloak-manifest.jsonl`` in the output folder, and the lock that keeps one run per folder.

Every photo a run finishes (cloaked, failed or skipped) appends one JSON line, flushed and fsynced before the next
photo starts: source path, size and SHA-256, the settings hash, status, labels, protection figures, output path and
SHA-256, error. A killed run therefore leaves every finished photo recorded; a torn last line (a kill mid-append) is
ignored on reading. A rerun reads it (:meth:`Manifest.done`): a photo whose latest record is ``cloaked`` with the same
source content and the same settings, and whose output is still on disk with the recorded hash, is skipped and its
record kept; anything else is redone. The report and the closing table are built from the latest record of every
input, so a resumed run reports the whole archive.

The lock (``comcloak.lock``, an advisory ``flock``) is held for the whole run: the kernel releases it when the process
dies, so a killed run never leaves a stale lock. A second run on the same folder stops with one line, or waits with
``--wait``. Stale ``.NAME.*.part`` temp files of a killed run are removed only while the lock is held.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from comcloak.atomic import TEMP_SUFFIX, atomic_writer, fsync_folder
from comcloak.errors import UserError

MANIFEST_NAME = "comcloak-manifest.jsonl"
LOCK_NAME = "comcloak.lock"
MANIFEST_VERSION = 1
_HASH_CHUNK = 1 << 20


class OutputBusyError(UserError):
    """Another comcloak run holds the output folder's lock."""


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def settings_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of everything that changes an output (the attack, the output format, ...)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def output_lock(output_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold ``output_dir``'s lock for the block; raise :class:`OutputBusyError` if another run holds it (unless
    ``wait``, which blocks until it is free)."""
    path = output_dir / LOCK_NAME
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as error:
        raise UserError(f"cannot lock {output_dir}: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputBusyError(f"another comcloak run (pid {holder}) is writing to {output_dir}; wait for it to "
                                  "finish or rerun with --wait") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_parts(output_dir: Path) -> list[Path]:
    """Delete the temp files (``.NAME.*.part``) a killed run left under ``output_dir``; call only under the lock."""
    removed = []
    for candidate in output_dir.rglob(f".*{TEMP_SUFFIX}"):
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


class Manifest:
    """The manifest of one output folder: the latest record per source, and an append handle while a run is open."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / MANIFEST_NAME
        self.latest: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        self._handle: IO[str] | None = None
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a kill mid-append
                    self.torn_lines += 1
                    continue
                if isinstance(record, dict) and "source" in record:
                    self.latest[record["source"]] = record

    def source_identity(self, source: str | os.PathLike) -> tuple[int, int, str]:
        """``(size, mtime_ns, sha256)`` of an input; the SHA-256 is taken from its latest record when the size and
        modification time are the recorded ones (as make and rsync trust them), so a rerun over a large archive does
        not read every photo again."""
        stat = os.stat(source)
        record = self.latest.get(str(source)) or {}
        if record.get("source_sha256") and record.get("source_size") == stat.st_size and \
                record.get("source_mtime_ns") == stat.st_mtime_ns:
            return stat.st_size, stat.st_mtime_ns, record["source_sha256"]
        return stat.st_size, stat.st_mtime_ns, file_sha256(source)

    def done(self, source: str, source_sha256: str, settings: str) -> dict[str, Any] | None:
        """The kept record of ``source`` if it was cloaked from the same content with the same settings and its output
        is on disk unchanged (same size and modification time as recorded, else the same SHA-256); None if it must be
        (re)done."""
        record = self.latest.get(source)
        if not record or record.get("status") != "cloaked" or record.get("source_sha256") != source_sha256 or \
                record.get("settings_hash") != settings or not record.get("output"):
            return None
        output = Path(record["output"])
        if not output.is_file():
            return None
        stat = output.stat()
        unchanged = record.get("output_size") == stat.st_size and record.get("output_mtime_ns") == stat.st_mtime_ns
        if not unchanged and file_sha256(output) != record.get("output_sha256"):
            return None
        return record

    def open(self) -> None:
        """Open for appending (creating the file and fsyncing its folder if new); fails early if not writable."""
        created = not self.path.exists()
        if self.torn_lines:
            self._repair()
        self._handle = open(self.path, "a", encoding="utf-8")
        if created:
            fsync_folder(self.path.parent)

    def _repair(self) -> None:
        """Drop torn lines so the file stays valid JSON Lines (rewritten atomically)."""
        with open(self.path, encoding="utf-8") as handle:
            lines = [line for line in handle if _is_json(line)]
        with atomic_writer(self.path) as out:
            out.write("".join(line if line.endswith("\n") else line + "\n" for line in lines).encode())
        self.torn_lines = 0

    def append(self, record: dict[str, Any]) -> None:
        """Append one record, flushed and fsynced before returning."""
        self.append_many([record])

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Append records with one flush and one fsync (a run's ``writing`` marks for a whole cluster job)."""
        if self._handle is None:
            raise RuntimeError("Manifest.append before open()")
        if not records:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        stamped = [{"manifest_version": MANIFEST_VERSION, "time": stamp, **record} for record in records]
        self._handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in stamped))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        for record in stamped:
            self.latest[record["source"]] = record

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True
