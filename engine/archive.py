"""An archive run: the output folder locked, its manifest read and appended, finished photos skipped, the rest cloaked.

:func:`run_archive` is what ``comcloak cloak`` and ``demo`` run after planning (:mod:`comcloak.engine.outputs`):

1. take the output folder's lock (one run per folder; ``wait`` blocks instead of failing) and remove the temp files a
   killed run left;
2. record every input the collection skipped (not a photo, dangling link, ...) with its reason;
3. hash every planned input; one already cloaked from the same bytes with the same settings (the manifest says so
   and its output is unchanged on disk) is skipped with its record kept; everything else is cloaked by
   :func:`comcloak.engine.pipeline.cloak_files`;
4. each finished photo appends its record to the manifest before the next one (a ``writing`` mark precedes each
   output's rename, so a rerun knows a half-finished output is its own to replace).

Returns one record per input: what the whole archive looks like, whether this run did the work or an earlier one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from comcloak.codecs import parse_codec
from comcloak.codecs.photos import SkippedInput
from comcloak.engine.archive_options import DEFAULT_ARCHIVE, ArchiveOptions, archive_settings  # noqa: F401 - archive.archive_settings
from comcloak.engine.cloaker import Cloaker
from comcloak.engine.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    Manifest,
    output_lock,
    remove_stale_parts,
    settings_hash,
)
from comcloak.engine.outputs import PlannedPhoto
from comcloak.engine.pipeline import PhotoRecord, cloak_files
from comcloak.engine.report import is_report
from comcloak.errors import UserError

logger = logging.getLogger(__name__)

WRITING = "writing"  # the manifest's mark before an output is renamed into place


def check_writable(path: Path, folder: bool = False) -> None:
    """Fail before any work if ``path`` (a file to write, or with ``folder`` a folder to write into) cannot be written:
    one line, a :class:`UserError`. Creates nothing: a folder that does not exist yet is judged by its nearest
    existing parent."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"output {path} exists and is not a folder")
    if not folder and path.is_dir():
        raise UserError(f"{path} is a folder; give a file name")
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"cannot write {path}: it is read-only")
    existing = path if folder else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write {path}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error} in {existing}") from None


def check_report_path(report: Path, inputs: Iterable[str | os.PathLike], plan: list[PlannedPhoto],
                      output_dir: Path) -> None:
    """Fail before any work if ``--report`` would replace what is not a report: an input, anything inside an input
    folder, an output, the manifest or the lock, or any existing file that is not a comcloak report (a rerun's own
    report is replaced). One line, a :class:`UserError`."""
    report = Path(report)
    target = report.resolve()
    for item in inputs:
        given = Path(item).resolve()
        if target == given or (given.is_dir() and given in target.parents):
            where = "is the input" if target == given else "is inside the input folder"
            raise UserError(f"--report {report} {where} {item}; write the report elsewhere")
    for planned in plan:
        if planned.source.resolve() == target:
            raise UserError(f"--report {report} is the input {planned.source}; write the report elsewhere")
    own = [Path(output_dir) / MANIFEST_NAME, Path(output_dir) / LOCK_NAME]
    own += [planned.destination for planned in plan if planned.destination is not None]
    if any(path.resolve() == target for path in own):
        raise UserError(f"--report {report} is a file of the output folder {output_dir}; write the report elsewhere")
    if report.exists() and not (report.is_file() and is_report(report)):
        raise UserError(f"--report {report} exists and is not a comcloak report; give a new file name")


def record_from_manifest(entry: dict[str, Any]) -> PhotoRecord:
    """A :class:`PhotoRecord` from a manifest line (unknown keys, such as the manifest's own, are dropped)."""
    known = {field.name for field in fields(PhotoRecord)}
    return PhotoRecord(**{key: value for key, value in entry.items() if key in known})


@cache
def _record_types() -> dict[str, Any]:
    return typing.get_type_hints(PhotoRecord)


def manifest_line_problem(entry: dict[str, Any]) -> str | None:
    """What makes a manifest line unfit to be a :class:`PhotoRecord` (``"output": 5``, ``"psnr_db": "abc"``), or
    None; keys a record does not have are the manifest's own and pass."""
    hints = _record_types()
    for key, value in entry.items():
        if key in hints and not _fits(value, hints[key]):
            return f"{key!r} is {_json_type(value)}"
    return None


def _json_type(value: Any) -> str:
    return "null" if value is None else {bool: "a boolean", int: "a number", float: "a number", str: "a string",
                                         list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON ``value`` has the type ``hint`` (of :class:`PhotoRecord`'s fields): ``X | None``, ``int``,
    ``float`` (an integer too), ``str``, ``bool``, ``list[X]``, ``dict[K, V]``."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, argument) for argument in arguments)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_fits(item, arguments[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(key, arguments[0]) and _fits(item, arguments[1])
                                               for key, item in value.items())
    if hint in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if hint is float else hint)


@dataclass
class ArchiveWork:
    """What an archive run hands its runner (this process, or a Ray cluster: :mod:`comcloak.engine.scale`): the photos
    to cloak, the outputs that are this archive's own to replace, and the two ways back to the manifest:
    ``mark_writing([(source, destination), ...])`` before those outputs may be renamed into place, and ``done(record)``
    as each photo finishes (its record appended and fsynced)."""

    todo: list[PlannedPhoto]
    replaceable: set[Path]
    mark_writing: Callable[[list[tuple[Path, Path]]], None]
    done: Callable[[PhotoRecord], None]


def run_archive(
    cloaker: Cloaker,
    plan: list[PlannedPhoto],
    skipped: list[SkippedInput],
    output_dir: Path,
    options: ArchiveOptions = DEFAULT_ARCHIVE,
    *,
    on_photo_done: Callable[[PhotoRecord], None] | None = None,
    on_batch_start: Callable[[int, tuple[int, int]], None] | None = None,
) -> list[PhotoRecord]:
    """Run the archive into ``output_dir`` in this process (see the module docstring), each record's settings hash
    from ``options.settings(cloaker)``. Returns the records of skipped inputs first, then one per planned photo in the
    order of ``plan``. ``options.overwrite`` redoes every photo, done or not, and replaces any existing output."""
    check_codec = parse_codec(options.check)

    def cloak_here(work: ArchiveWork) -> None:
        cloak_files(cloaker, work.todo, check_codec, options, on_photo_done=work.done, replaceable=work.replaceable,
                    before_write=lambda source, destination: work.mark_writing([(source, destination)]),
                    on_batch_start=on_batch_start)

    return run_archive_with(cloak_here, plan, skipped, output_dir, options.settings(cloaker), options,
                            on_photo_done=on_photo_done)


def run_archive_with(
    runner: Callable[[ArchiveWork], None],
    plan: list[PlannedPhoto],
    skipped: list[SkippedInput],
    output_dir: Path,
    settings: dict[str, Any],
    options: ArchiveOptions = DEFAULT_ARCHIVE,
    *,
    on_photo_done: Callable[[PhotoRecord], None] | None = None,
    hash_new_sources: bool = True,
) -> list[PhotoRecord]:
    """:func:`run_archive` with the cloaking done by ``runner``: the lock (``options.wait``), the manifest, skipping
    what is done (unless ``options.overwrite``) and recording what finishes are the same for every runner;
    ``settings`` (:func:`archive_settings`) is hashed into each record. ``hash_new_sources=False`` leaves the SHA-256
    of inputs the manifest has never cloaked to the runner, which reads them anyway (on a cluster, its workers),
    instead of reading every input here first."""
    digest = settings_hash(settings)
    with output_lock(output_dir, wait=options.wait):
        manifest = _open_manifest(output_dir)
        try:
            return _run_locked(runner, plan, skipped, manifest, digest, options.overwrite, on_photo_done,
                               hash_new_sources)
        finally:
            manifest.close()


def _open_manifest(output_dir: Path) -> Manifest:
    """The folder's manifest, read and open for appending, with the temp files a killed run left removed (those the
    manifest knows to be comcloak's included). Fails with one line before any photo: nothing is done, exit 2."""

    def unusable(error: Exception) -> UserError:
        return UserError(f"cannot use the manifest {output_dir / MANIFEST_NAME}: "
                         f"{getattr(error, 'strerror', None) or error}")

    try:
        manifest = Manifest(output_dir, check=manifest_line_problem)
    except (OSError, UnicodeDecodeError) as error:
        raise unusable(error) from None
    for stale in remove_stale_parts(manifest.folder, manifest.recorded_outputs()):
        logger.info("removed %s, left by a killed run", stale)
    try:
        manifest.open()
    except OSError as error:
        raise unusable(error) from None
    return manifest


def _run_locked(runner, plan, skipped, manifest: Manifest, digest: str, overwrite: bool, on_photo_done,
                hash_new_sources: bool) -> list[PhotoRecord]:
    records: list[PhotoRecord] = []

    def finish(record: PhotoRecord, append: bool = True) -> None:
        if append:
            manifest.append(record.as_dict())
        records.append(record)
        if on_photo_done:
            on_photo_done(record)

    for item in skipped:
        finish(PhotoRecord(source=str(item.path), status="skipped", error=item.reason, settings_hash=digest))
    identities: dict[str, tuple[int, int, str]] = {}
    todo: list[PlannedPhoto] = []
    replaceable: set[Path] = set()
    for planned in plan:
        source = str(planned.source)
        previous = manifest.latest.get(source)
        if planned.error is None and (hash_new_sources or (previous and previous.get("status") == "cloaked")):
            try:
                identity = manifest.source_identity(planned.source)
            except OSError as error:
                finish(PhotoRecord(source=source, status="failed", error=f"{source}: cannot read ({error.strerror})",
                                   settings_hash=digest))
                continue
            identities[source] = identity
            kept = None if overwrite or planned.destination is None else \
                manifest.done(source, identity[2], digest, planned.destination)
            if kept is not None:
                record = record_from_manifest(kept)
                record.resumed, record.output = True, str(planned.destination)  # where the folder is now
                finish(record, append=False)
                continue
        if planned.error is None and previous and planned.destination is not None and \
                manifest.names_output(previous, planned.destination):
            replaceable.add(planned.destination)  # this archive's own output, from other settings or a kill
        todo.append(planned)

    def mark_writing(pairs: list[tuple[Path, Path]]) -> None:
        manifest.append_many([{"source": str(source), "status": WRITING, "output": str(destination),
                               "settings_hash": digest} for source, destination in pairs])

    def done(record: PhotoRecord) -> None:
        record.settings_hash = digest
        if record.source_sha256 is None and record.source in identities:
            record.source_size, record.source_mtime_ns, record.source_sha256 = identities[record.source]
        finish(record)

    runner(ArchiveWork(todo, replaceable, mark_writing, done))
    order = {str(planned.source): index for index, planned in enumerate(plan)}
    return sorted(records, key=lambda record: order.get(record.source, -1))
