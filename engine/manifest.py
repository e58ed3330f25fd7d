"""The archive's memory: ``comcloak-manifest.jsonl`` in the output folder, and the lock that keeps one run per folder.

Every photo a run finishes (cloaked, failed or skipped) appends one JSON line, written and fsynced before the next
photo starts: source path, size and SHA-256, the settings hash, status, labels, protection figures, output path and
SHA-256, error. A killed run therefore leaves every finished photo recorded; a torn last line (a kill mid-append) is
ignored on reading, and so is, with a warning, a line that is not a record (wrong types). An append that cannot be
written (a full disk) is cut back off and stops the run with one line (:class:`ManifestWriteError`): the file holds
whole records only. Outputs are recorded relative to the folder (older manifests: absolute paths), so a moved or
copied folder resumes against its own files, and a record never makes comcloak trust a file outside the folder.
A rerun reads it (:meth:`Manifest.done`): a photo whose latest record is ``cloaked`` with the same source content and
the same settings, and whose output is still in the folder with the recorded hash, is skipped and its record kept;
anything else is redone. The report and the closing table are built from the latest record of every
input, so a resumed run reports the whole archive.

The lock (``comcloak.lock``, an advisory ``flock``) is held for the whole run: the kernel releases it when the process
dies, so a killed run never leaves a stale lock. A second run on the same folder stops with one line, or waits with
``--wait``. Stale temp files of a killed run (comcloak's own names only, :func:`comcloak.atomic.is_temp_name`) are
removed only while the lock is held.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from comcloak.atomic import TEMP_SUFFIX, atomic_writer, fsync_folder, is_temp_name
from comcloak.errors import UserError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "comcloak-manifest.jsonl"
LOCK_NAME = "comcloak.lock"
MANIFEST_VERSION = 2  # 2: outputs relative to the folder; 1 named them by absolute path (still read)
_HASH_CHUNK = 1 << 20
# Earlier comcloak temp names kept the destination's name (``.NAME.XXXXXXXX.part``): removed only where NAME
# is an output the manifest records, since a user's ``.notes.part`` looks the same.
_LEGACY_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


class OutputBusyError(UserError):
    """Another comcloak run holds the output folder's lock."""


class ManifestWriteError(UserError):
    """A record cannot be appended to the manifest (a full disk): the run stops; what was recorded is kept."""


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
    ``wait``, which blocks until it is free). The holder's pid is written unbuffered, so a full disk fails here with
    one line, not later when the file is closed."""
    path = output_dir / LOCK_NAME
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(f"cannot lock {output_dir}: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputBusyError(f"another comcloak run (pid {holder}) is writing to {output_dir}; wait for it to "
                                  "finish or rerun with --wait") from None
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        except OSError as error:
            raise UserError(f"cannot write to {output_dir}: {error.strerror or error}") from None
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def remove_stale_parts(output_dir: Path, recorded: set[Path] | frozenset[Path] = frozenset()) -> list[Path]:
    """Delete the temp files a killed run left under ``output_dir``; call only under the lock. Only comcloak's own:
    :func:`comcloak.atomic.is_temp_name`, or an older comcloak's ``.NAME.XXXXXXXX.part`` beside a ``recorded``
    output ``NAME`` (absolute paths). Any other ``.part`` file is the user's and stays."""
    removed = []
    for candidate in Path(output_dir).absolute().rglob(f".*{TEMP_SUFFIX}"):
        legacy = _LEGACY_TEMP_NAME.fullmatch(candidate.name)
        ours = is_temp_name(candidate.name) or (legacy is not None and candidate.with_name(legacy["name"]) in recorded)
        if ours and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


class Manifest:
    """The manifest of one output folder: the latest record per source, and an append handle while a run is open.

    ``check(record)`` says what is wrong with a line (a reason) or None; lines it refuses are ignored with one
    warning, as are lines that are not objects with a string ``source``."""

    def __init__(self, output_dir: Path, check: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        self.folder = Path(output_dir).absolute()
        self.path = self.folder / MANIFEST_NAME
        self.latest: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        self.ignored_lines = 0
        self._check = check
        self._descriptor: int | None = None
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        first_problem = None
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a kill mid-append
                    self.torn_lines += 1
                    continue
                problem = self._problem(record)
                if problem is not None:
                    self.ignored_lines += 1
                    first_problem = first_problem or f"line {number}: {problem}"
                    continue
                self.latest[record["source"]] = record
        if first_problem is not None:
            logger.warning("ignored %d malformed line%s of %s (%s)", self.ignored_lines,
                           "" if self.ignored_lines == 1 else "s", self.path, first_problem)

    def _problem(self, record: Any) -> str | None:
        if not isinstance(record, dict):
            return f"a JSON {type(record).__name__}, not a record"
        if not isinstance(record.get("source"), str):
            return "'source' is not a string"
        return self._check(record) if self._check is not None else None

    def source_identity(self, source: str | os.PathLike) -> tuple[int, int, str]:
        """``(size, mtime_ns, sha256)`` of an input; the SHA-256 is taken from its latest record when the size and
        modification time are the recorded ones (as make and rsync trust them), so a rerun over a large archive does
        not read every photo again."""
        info = os.stat(source)
        record = self.latest.get(str(source)) or {}
        if record.get("source_sha256") and record.get("source_size") == info.st_size and \
                record.get("source_mtime_ns") == info.st_mtime_ns:
            return info.st_size, info.st_mtime_ns, record["source_sha256"]
        return info.st_size, info.st_mtime_ns, file_sha256(source)

    def names_output(self, record: dict[str, Any], destination: Path) -> bool:
        """Whether ``record``'s output is ``destination`` (an absolute path in this folder). A relative output is
        the folder's own; an older manifest's absolute one counts when it ends with the destination's path in the
        folder (the folder was moved or copied since). Only the file in this folder is ever looked at."""
        output = record.get("output")
        try:
            relative = Path(destination).relative_to(self.folder)
        except ValueError:
            return False
        if not isinstance(output, str) or not output:
            return False
        recorded = Path(output)
        if not recorded.is_absolute():
            return recorded == relative
        return recorded.parts[-len(relative.parts):] == relative.parts

    def recorded_outputs(self) -> set[Path]:
        """The outputs the latest records name, as absolute paths (an older manifest's: where they were written)."""
        return {self.folder / record["output"] for record in self.latest.values()
                if isinstance(record.get("output"), str) and record["output"]}

    def done(self, source: str, source_sha256: str, settings: str, destination: Path) -> dict[str, Any] | None:
        """The kept record of ``source`` if it was cloaked from the same content with the same settings into
        ``destination``, and that file in this folder is unchanged (same size and modification time as recorded,
        else the same SHA-256); None if it must be (re)done."""
        record = self.latest.get(source)
        if not record or record.get("status") != "cloaked" or record.get("source_sha256") != source_sha256 or \
                record.get("settings_hash") != settings or not self.names_output(record, destination):
            return None
        try:
            found = os.lstat(destination)
        except OSError:
            return None
        if not stat.S_ISREG(found.st_mode):  # a symlink in its place could point anywhere
            return None
        unchanged = record.get("output_size") == found.st_size and record.get("output_mtime_ns") == found.st_mtime_ns
        if not unchanged and file_sha256(destination) != record.get("output_sha256"):
            return None
        return record

    def open(self) -> None:
        """Open for appending (creating the file and fsyncing its folder if new); fails early if not writable."""
        created = not self.path.exists()
        if self.torn_lines:
            self._repair()
        self._descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        if created:
            fsync_folder(self.path.parent)
        size = os.fstat(self._descriptor).st_size
        if size and os.pread(self._descriptor, 1, size - 1) != b"\n":
            self._write(b"\n")  # a last line without its newline would swallow the next record

    def _repair(self) -> None:
        """Drop torn lines so the file stays valid JSON Lines (rewritten atomically)."""
        with open(self.path, encoding="utf-8") as handle:
            lines = [line for line in handle if _is_json(line)]
        with atomic_writer(self.path) as out:
            out.write("".join(line if line.endswith("\n") else line + "\n" for line in lines).encode())
        self.torn_lines = 0

    def append(self, record: dict[str, Any]) -> None:
        """Append one record, fsynced before returning."""
        self.append_many([record])

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Append records with one write and one fsync (a run's ``writing`` marks for a whole cluster job); an
        output inside the folder is recorded relative to it. Raises :class:`ManifestWriteError`."""
        if not records:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        stamped = [{"manifest_version": MANIFEST_VERSION, "time": stamp, **record} for record in records]
        for record in stamped:
            if isinstance(record.get("output"), str):
                record["output"] = self._stored_output(record["output"])
        self._write(b"".join(_json_line(record) for record in stamped))
        for record in stamped:
            self.latest[record["source"]] = record

    def _stored_output(self, output: str) -> str:
        path = Path(output)
        if path.is_absolute() and self.folder in path.parents:
            return str(path.relative_to(self.folder))
        return output

    def _write(self, data: bytes) -> None:
        """Append ``data`` whole or not at all: a failed write (a full disk) is cut back off the file."""
        descriptor = self._descriptor
        if descriptor is None:
            raise RuntimeError("Manifest.append before open()")
        start = os.fstat(descriptor).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        except OSError as error:
            with suppress(OSError):
                os.ftruncate(descriptor, start)
            raise ManifestWriteError(f"cannot record in {self.path}: {error.strerror or error}; the photos recorded "
                                     "so far are kept: rerun when it can be written") from None

    def close(self) -> None:
        """Close the append handle (every append was already fsynced, so nothing is lost here)."""
        if self._descriptor is not None:
            with suppress(OSError):
                os.close(self._descriptor)
            self._descriptor = None


def _json_line(record: dict[str, Any]) -> bytes:
    """One manifest line: UTF-8 text, or for a file name that is not UTF-8 (surrogate escapes) the ASCII-escaped
    JSON, which reads back to the same name."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(record) + "\n").encode()


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True
