"""Atomic, durable file writes: write to a temporary file beside the destination, fsync it, rename it over the
destination, fsync the folder. A crash leaves the old file or the new one, never a torn one; the temp files a SIGKILL
can leave behind are removed by the next run (``comcloak.engine.manifest``). Their names are comcloak's own
(``.comcloak-XXXXXXXX.part``, :func:`is_temp_name`), so that cleanup never touches a user's ``.NAME.part`` file, and
short whatever the destination's name (a name of up to NAME_MAX bytes still gets a temp file beside it)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".comcloak-"
TEMP_SUFFIX = ".part"
# mkstemp's random part: eight characters of this alphabet (CPython's tempfile._RandomNameSequence).
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of :func:`atomic_writer`'s temp files (and so comcloak's to remove if left over)."""
    return _TEMP_NAME.fullmatch(name) is not None


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process umask (read without changing it)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


@contextmanager
def atomic_writer(destination: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content replaces ``destination`` only if the block finishes.

    A crash or a full disk leaves either the old file or none, never a half-written one, and no temp file.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=destination.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; the result should have the permissions any new file would get.
        os.chmod(temp_name, default_file_mode())
        os.replace(temp_name, destination)
        fsync_folder(destination.parent)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_move(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Put a finished file ``source`` (on ``destination``'s filesystem) in place as :func:`atomic_writer` does: its
    bytes on disk first, then one rename, then the folder's entry on disk, so a crash leaves the old file or the new
    one, whole."""
    with open(source, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(source, default_file_mode())
    os.replace(source, destination)
    fsync_folder(Path(destination).parent)


def write_json(payload: object, destination: str | os.PathLike) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_writer(destination) as handle:
        handle.write(json.dumps(payload, indent=2).encode())
