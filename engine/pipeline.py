"""Cloaking files on disk: load, cloak in batches, write atomically, check through a real codec, report.

A photo that cannot be read or written becomes a failure record; it never stops the run, and inputs are never
written to.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from comcloak.atomic import write_json
from comcloak.attacks import linf, psnr
from comcloak.codecs import Codec
from comcloak.codecs.photos import Photo, PhotoError, load_photo, output_suffix, save_photo
from comcloak.engine.cloaker import Cloaker
from comcloak.errors import UserError
from comcloak.models.labels import imagenet_class_name

logger = logging.getLogger(__name__)

MIN_PHOTO_SIDE = 32  # below this the classifiers' strided stages have nothing left to look at


class OutputLayoutError(UserError, ValueError):
    """The output folder would overwrite or live inside the inputs."""


@dataclass
class PhotoRecord:
    """The outcome for one input photo (``status``: ``cloaked``, ``skipped`` or ``failed``)."""

    source: str
    status: str
    output: str | None = None
    width: int | None = None
    height: int | None = None
    clean_label: int | None = None
    cloaked_label: int | None = None
    check_label: int | None = None
    goal_label: int | None = None
    success: bool | None = None
    psnr_db: float | None = None
    linf: int | None = None
    seconds: float | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        record = asdict(self)
        if record["psnr_db"] is not None and math.isinf(record["psnr_db"]):
            record["psnr_db"] = None  # JSON has no infinity; identical images have no finite PSNR
        return record


def plan_outputs(pairs: list[tuple[Path, Path]], output_dir: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse layouts that could overwrite an input or feed outputs back into the inputs on a rerun."""
    output_dir = output_dir.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if source.is_dir() and (output_dir == source or source in output_dir.parents):
            raise OutputLayoutError(f"output folder {output_dir} is inside input folder {source}; choose another")
    sources = {source for source, _ in pairs}
    seen: dict[Path, Path] = {}
    for source, relative in pairs:
        destination = (output_dir / relative).resolve()
        if destination in sources:
            raise OutputLayoutError(f"output {destination} would overwrite the input {source}; choose another folder")
        stem_key = destination.with_suffix("")
        if stem_key in seen:
            raise OutputLayoutError(f"inputs {seen[stem_key]} and {source} would both be written to {destination}")
        seen[stem_key] = source


def cloak_files(
    cloaker: Cloaker,
    pairs: list[tuple[Path, Path]],
    output_dir: Path,
    check_codec: Codec | None,
    batch_size: int = 8,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    on_photo_done: Callable[[PhotoRecord], None] | None = None,
) -> list[PhotoRecord]:
    """Cloak every ``(source, relative_output)`` pair into ``output_dir``; returns one record per pair, in order."""
    records: list[PhotoRecord] = []
    pending: list[tuple[Photo, Path, Path]] = []

    def emit(record: PhotoRecord) -> None:
        records.append(record)
        if on_photo_done:
            on_photo_done(record)

    def flush() -> None:
        for record in _cloak_pending(cloaker, pending, check_codec, batch_size, jpeg_quality):
            emit(record)
        pending.clear()

    for source, relative in pairs:
        try:
            photo = load_photo(source)
            if min(photo.pixels.shape[:2]) < MIN_PHOTO_SIDE:
                raise PhotoError(source, f"too small to cloak ({photo.pixels.shape[1]}x{photo.pixels.shape[0]}, "
                                 f"need at least {MIN_PHOTO_SIDE} px on each side)")
        except PhotoError as error:
            emit(PhotoRecord(source=str(source), status="failed", error=str(error)))
            continue
        destination = output_dir / relative.with_suffix(output_suffix(photo.format, relative.suffix))
        if destination.exists() and not overwrite:
            emit(PhotoRecord(source=str(source), status="skipped", output=str(destination),
                             error="output exists (use --overwrite)"))
            continue
        pending.append((photo, source, destination))
        if len(pending) >= batch_size:
            flush()
    flush()
    order = {str(source): index for index, (source, _) in enumerate(pairs)}
    return sorted(records, key=lambda record: order[record.source])


def _cloak_pending(
    cloaker: Cloaker,
    pending: list[tuple[Photo, Path, Path]],
    check_codec: Codec | None,
    batch_size: int,
    jpeg_quality: int,
) -> Iterator[PhotoRecord]:
    """Cloak, write and check one batch of loaded photos, yielding a record per photo as it is finished."""
    if not pending:
        return
    started = time.perf_counter()
    try:
        results: list = cloaker.cloak_photos([photo.pixels for photo, _, _ in pending], batch_size=batch_size)
    except Exception:  # noqa: BLE001 - one bad photo must not sink its batch: retry one by one
        logger.debug("batch failed; retrying photo by photo", exc_info=True)
        results = [_cloak_one(cloaker, photo) for photo, _, _ in pending]
    per_photo = (time.perf_counter() - started) / len(pending)
    for (photo, source, destination), result in zip(pending, results):
        if isinstance(result, str):
            yield PhotoRecord(source=str(source), status="failed", error=f"{source}: {result}")
            continue
        height, width = photo.pixels.shape[:2]
        record = PhotoRecord(source=str(source), status="cloaked", width=width, height=height,
                             clean_label=result.clean_label, goal_label=result.goal_label, seconds=per_photo)
        try:
            save_photo(photo, result.cloaked, destination, jpeg_quality=jpeg_quality)
        except OSError as error:
            record.status, record.error = "failed", f"{destination}: cannot write ({error})"
        else:
            record.output = str(destination)
            written = load_photo(destination).pixels  # score what is on disk, after our own encoder
            record.psnr_db = psnr(photo.pixels, written)
            record.linf = linf(photo.pixels, written)
            record.cloaked_label = int(cloaker.predict(written[None])[0])
            received = check_codec.apply(written) if check_codec is not None else written
            record.check_label = int(cloaker.predict(received[None])[0])
            if cloaker.config.targeted:
                record.success = record.check_label == record.goal_label
            else:
                record.success = record.check_label != record.clean_label
        yield record


def _cloak_one(cloaker: Cloaker, photo: Photo):
    """Cloak a single photo, returning the error text instead of raising."""
    try:
        return cloaker.cloak_photos([photo.pixels], batch_size=1)[0]
    except Exception as error:  # noqa: BLE001 - reported as this photo's failure record
        logger.warning("cloaking %s failed", photo.source, exc_info=True)
        return f"cloaking failed ({type(error).__name__}: {error})"


def _label(index: int | None) -> str:
    return "-" if index is None else f"{index} {imagenet_class_name(index)}"[:28]


def format_table(records: list[PhotoRecord], check_spec: str) -> str:
    """A plain-text table, one row per photo, and a summary line."""
    header = ("photo", "size", "clean label", "cloaked label", f"after {check_spec}", "fooled", "PSNR dB")
    rows = []
    for record in records:
        if record.status != "cloaked":
            rows.append((Path(record.source).name, "-", record.status + ": " + (record.error or ""), "", "", "", ""))
            continue
        rows.append((
            Path(record.source).name,
            f"{record.width}x{record.height}",
            _label(record.clean_label),
            _label(record.cloaked_label),
            _label(record.check_label),
            "yes" if record.success else "no",
            "inf" if record.psnr_db is None or math.isinf(record.psnr_db) else f"{record.psnr_db:.1f}",
        ))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    cloaked = [record for record in records if record.status == "cloaked"]
    fooled = sum(bool(record.success) for record in cloaked)
    failed = sum(record.status == "failed" for record in records)
    skipped = sum(record.status == "skipped" for record in records)
    lines.append(f"{len(cloaked)} cloaked, {fooled} fooled after {check_spec}, {skipped} skipped, {failed} failed")
    return "\n".join(lines)


def write_report(records: list[PhotoRecord], path: Path, settings: dict) -> None:
    """Write a JSON report (settings and one record per photo) atomically."""
    payload = {"settings": settings, "torch": torch.__version__, "photos": [record.as_dict() for record in records]}
    write_json(payload, path)
