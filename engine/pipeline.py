"""Cloaking files on disk in three plain steps: cloak, write, score.

1. **Plan**: every input's header gives its upright size without decoding it, so photos are grouped by attack-view
   shape (not by arrival order) and each group is attacked in batches of ``batch_size``; unreadable or too-small
   inputs and existing outputs become records at once.
2. **Cloak** (:func:`cloak_batch`): one batch of loaded photos through the ``Cloaker``; a photo that fails gives a
   :class:`CloakFailure`, never a crash of its batch.
3. **Write** (:func:`write_cloak`): the cloak, atomically, in the input's format family.
4. **Score** (:func:`score_cloak`): what is on disk against the original, both after the ``--check`` codec chain and
   in the attacker's crop view, with the one success rule (:func:`comcloak.attacks.attack_succeeded`).

A photo that cannot be read or written becomes a failure record; it never stops the run, and inputs are never
written to. Memory holds one batch of photos at a time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from comcloak import defaults
from comcloak.atomic import atomic_writer
from comcloak.attacks import attack_succeeded, linf, psnr
from comcloak.attacks.views import view_top_labels
from comcloak.codecs import Codec
from comcloak.codecs.decoding import decode_photo
from comcloak.codecs.photos import DEFAULT_WRITE, Photo, PhotoError, WriteOptions, encode_photo, load_photo
from comcloak.engine.archive_options import DEFAULT_ARCHIVE, ArchiveOptions
from comcloak.engine.cloaker import Cloaker, CloakResult, attack_shape, too_small_reason
from comcloak.engine.outputs import PlannedPhoto
from comcloak.engine.protection import TOO_SMALL, face_report, faces_protected, no_face_cloaked_reason
from comcloak.errors import UserError

logger = logging.getLogger(__name__)

JUDGE_VIEW = "crop"  # the closing table judges as an attacker sees the photo: shorter side 256, centre crop 224


@dataclass
class PhotoRecord:
    """The outcome for one input photo (``status``: ``cloaked``, ``skipped`` or ``failed``)."""

    source: str
    status: str
    output: str | None = None
    width: int | None = None
    height: int | None = None
    clean_label: int | None = None  # lab view: the surrogate's top-1 of the original in the cloaker's own view
    cloaked_label: int | None = None  # lab view: of the output as written
    clean_check_label: int | None = None  # judge: the original after the check codec, in the attacker's crop view
    check_label: int | None = None  # judge: the output after the check codec, in the attacker's crop view
    goal_label: int | None = None
    success: bool | None = None  # protected on every surrogate (check_label against clean_check_label, or the target)
    # and, when faces are cloaked, every face protected (engine.protection.faces_protected)
    protected_on: dict[str, bool] | None = None  # each surrogate's judgement, by --classifier name
    faces: list[dict] | None = None  # per face after the check codec (engine.protection.face_report); None: not asked
    psnr_db: float | None = None  # of the output as written against the original, full resolution
    linf: int | None = None  # of the cloak itself (at most eps), before the output encoder
    linf_written: int | None = None  # of the output as written: the cloak plus the output encoder's error
    seconds: float | None = None
    steps_used: int | None = None  # attack steps the objects cloak ran (fewer than steps: stopped early, --stop-after)
    error: str | None = None
    notes: list[str] | None = None  # what decoding did to the input's samples (16-bit scaled, CMYK converted, ...)
    source_size: int | None = None
    source_mtime_ns: int | None = None
    source_sha256: str | None = None
    output_sha256: str | None = None
    output_size: int | None = None
    output_mtime_ns: int | None = None
    settings_hash: str | None = None
    resumed: bool = False  # done by an earlier run with the same input and settings: its record, kept

    def as_dict(self) -> dict:
        record = asdict(self)
        if record["psnr_db"] is not None and math.isinf(record["psnr_db"]):
            record["psnr_db"] = None  # JSON has no infinity; identical images have no finite PSNR
        return record


def unchanged_reason(original: np.ndarray, cloaked: np.ndarray) -> str | None:
    """Why a cloak is no cloak, or None: one identical to its input (L-inf 0: an attack with nothing left to push, as
    on a photo cloaked before, or an encoder that rounded the change away) protects nothing, so it is a failure, never
    "cloaked"."""
    if original.shape != cloaked.shape or not np.array_equal(original, cloaked):
        return None
    return "the cloak changed nothing (L-inf 0: the output would be identical to the input), so nothing was written"


@dataclass(frozen=True)
class CloakFailure:
    """A photo the cloaker could not cloak, and why (one line); ``internal``: not the photo's fault (a bug, logged
    with its traceback), as opposed to a photo the attack refuses."""

    error: str
    internal: bool = False
    faces: list[dict] | None = None  # --protect faces on a photo with no face to cloak: its faces (none, too small)


@dataclass(frozen=True)
class PhotoJob:
    """One photo to cloak in a batch of photos whose attack views share ``view_shape``. ``data``: the file's bytes
    when a read stage already read them (Ray Data), with ``identity`` ``(size, mtime_ns, sha256)`` of those bytes;
    otherwise the file is read when the batch is cloaked."""

    source: Path
    destination: Path
    image_format: str
    view_shape: tuple[int, int]
    data: bytes | None = None
    identity: tuple[int, int, str] | None = None


def plan_batches(
    plan: list[PlannedPhoto],
    attack_size: int,
    batch_size: int = defaults.BATCH_SIZE,
    overwrite: bool = False,
    replaceable: set[Path] | frozenset[Path] = frozenset(),
) -> tuple[list[PhotoRecord], list[list[PhotoJob]]]:
    """The batches :func:`cloak_files` attacks: planned photos grouped by attack-view shape (in order of first
    appearance), each group cut into batches of ``batch_size``; and the records of the photos that need no attack
    (unreadable header, too small, an existing output that is not ``replaceable`` without ``overwrite``). Every
    runner (this process, a Ray cluster) attacks the same batches, so they write the same cloaks."""
    records: list[PhotoRecord] = []
    groups: dict[tuple[int, int], list[PhotoJob]] = {}
    for planned in plan:
        source, header = planned.source, planned.header
        if planned.error is not None or header is None or planned.destination is None:
            records.append(PhotoRecord(source=str(source), status="failed",
                                       error=planned.error or f"{source}: not planned"))
            continue
        too_small = too_small_reason(header.width, header.height)
        if too_small is not None:
            records.append(PhotoRecord(source=str(source), status="failed", error=str(PhotoError(source, too_small))))
            continue
        if planned.destination.exists() and not overwrite and planned.destination not in replaceable:
            records.append(PhotoRecord(source=str(source), status="skipped", output=str(planned.destination),
                                       error="output exists (use --overwrite)"))
            continue
        view_shape = attack_shape(header.height, header.width, attack_size)
        groups.setdefault(view_shape, []).append(PhotoJob(source, planned.destination,
                                                          planned.image_format or "PNG", view_shape))
    batches = [jobs[start : start + batch_size]
               for jobs in groups.values() for start in range(0, len(jobs), batch_size)]
    return records, batches


def cloak_files(
    cloaker: Cloaker,
    plan: list[PlannedPhoto],
    check_codec: Codec | None,
    options: ArchiveOptions = DEFAULT_ARCHIVE,
    *,
    on_photo_done: Callable[[PhotoRecord], None] | None = None,
    replaceable: set[Path] | frozenset[Path] = frozenset(),
    before_write: Callable[[Path, Path], None] | None = None,
    on_batch_start: Callable[[int, tuple[int, int]], None] | None = None,
) -> list[PhotoRecord]:
    """Cloak every planned photo (:func:`comcloak.engine.outputs.plan_outputs`); returns one record per photo, in
    the order of ``plan`` (the work itself runs in the batches of :func:`plan_batches`; see the module docstring).
    Of ``options``, the batch size, ``overwrite`` and the write options apply (the judge is ``check_codec``).

    An existing output is skipped unless ``options.overwrite`` or it is in ``replaceable`` (this archive's own, per its
    manifest); ``before_write(source, destination)`` runs before each output is written (the manifest's mark);
    ``on_batch_start(photos, view_shape)`` before each batch is attacked (the progress bar's word)."""
    records: list[PhotoRecord] = []

    def emit(record: PhotoRecord) -> None:
        records.append(record)
        if on_photo_done:
            on_photo_done(record)

    immediate, batches = plan_batches(plan, cloaker.config.attack_size, options.batch_size, options.overwrite,
                                      replaceable)
    for record in immediate:
        emit(record)
    for jobs in batches:
        if on_batch_start is not None:
            on_batch_start(len(jobs), jobs[0].view_shape)
        for record in cloak_write_score(cloaker, jobs, check_codec, options.write, before_write):
            emit(record)
    order = {str(planned.source): index for index, planned in enumerate(plan)}
    return sorted(records, key=lambda record: order[record.source])


def cloak_write_score(cloaker: Cloaker, jobs: list[PhotoJob], check_codec: Codec | None, write: WriteOptions,
                      before_write: Callable[[Path, Path], None] | None = None) -> Iterable[PhotoRecord]:
    """One batch through the three steps, a record per photo (a photo that cannot be read, cloaked or written fails
    alone)."""
    loaded: list[tuple[PhotoJob, Photo]] = []
    for job in jobs:
        try:
            loaded.append((job, load_photo(job.source, data=job.data)))
        except PhotoError as error:
            yield _with_identity(PhotoRecord(source=str(job.source), status="failed", error=str(error)), job)
    if not loaded:
        return
    started = time.perf_counter()
    results = cloak_batch(cloaker, [photo for _, photo in loaded])
    per_photo = (time.perf_counter() - started) / len(loaded)
    for (job, photo), result in zip(loaded, results):
        if isinstance(result, CloakFailure):
            yield _with_identity(PhotoRecord(source=str(job.source), status="failed", faces=result.faces,
                                             error=f"{job.source}: {result.error}"), job)
            continue
        height, width = photo.pixels.shape[:2]
        record = _with_identity(PhotoRecord(
            source=str(job.source), status="cloaked", width=width, height=height, clean_label=result.clean_label,
            goal_label=result.goal_label, seconds=per_photo, steps_used=result.steps_used,
            notes=list(photo.notes) or None), job)
        try:
            data, written = encode_as_written(photo, result.cloaked, write, job.image_format)
        except OSError as error:  # an encoder that refuses these pixels: nothing was written
            record.status, record.error = "failed", _cannot_write(job.destination, error)
            yield record
            continue
        unchanged = unchanged_reason(photo.pixels, written)
        if unchanged is not None:  # the encoder rounded the cloak away: the output would be the input
            record.status, record.error, record.linf_written = "failed", f"{job.source}: {unchanged}", 0
            yield record
            continue
        if before_write is not None:
            before_write(job.source, job.destination)
        try:
            record.output_sha256 = write_cloak(data, job.destination)
        except OSError as error:
            record.status, record.error = "failed", _cannot_write(job.destination, error)
        else:
            record.output = str(job.destination)
            stat = job.destination.stat()  # where it was written (on a cluster, the worker); the hash is of the bytes
            record.output_size, record.output_mtime_ns = stat.st_size, stat.st_mtime_ns
            record.linf = linf(photo.pixels, result.cloaked)
            score_cloak(cloaker, record, photo.pixels, written, check_codec, result)
        yield record


def _cannot_write(destination: Path, error: OSError) -> str:
    return f"{destination}: cannot write ({error})"


def _with_identity(record: PhotoRecord, job: PhotoJob) -> PhotoRecord:
    """``record`` with the size, modification time and SHA-256 of the bytes its job read, when a read stage gave
    them."""
    if job.identity is not None:
        record.source_size, record.source_mtime_ns, record.source_sha256 = job.identity
    return record


def cloak_batch(cloaker: Cloaker, photos: list[Photo]) -> list[CloakResult | CloakFailure]:
    """Step 1: cloak loaded photos together; if the batch fails, each photo alone, so one bad photo fails alone. A
    cloak identical to its photo is a :class:`CloakFailure` (:func:`unchanged_reason`)."""
    try:
        results = list(cloaker.cloak_photos([photo.pixels for photo in photos], batch_size=max(1, len(photos))))
    except Exception:  # noqa: BLE001 - one bad photo must not sink its batch: retry one by one
        logger.debug("batch failed; retrying photo by photo", exc_info=True)
        results = [_cloak_one(cloaker, photo) for photo in photos]
    faces_only = not cloaker.protection.objects
    return [_refuse_unchanged(photo, result, faces_only) for photo, result in zip(photos, results)]


def _refuse_unchanged(photo: Photo, result: CloakResult | CloakFailure,
                      faces_only: bool = False) -> CloakResult | CloakFailure:
    """A cloak identical to its photo is a failure: under ``--protect faces`` (``faces_only``) a photo without a face
    to cloak (none found, or each too small), reported as such and never as protected."""
    if isinstance(result, CloakResult) and (unchanged := unchanged_reason(photo.pixels, result.cloaked)) is not None:
        if faces_only and result.faces is not None and not any(face.region for face in result.faces):
            faces = [face_report(face, None, TOO_SMALL) for face in result.faces]
            return CloakFailure(no_face_cloaked_reason(faces), faces=faces)
        return CloakFailure(unchanged)
    return result


def _cloak_one(cloaker: Cloaker, photo: Photo) -> CloakResult | CloakFailure:
    try:
        return cloaker.cloak_photos([photo.pixels], batch_size=1)[0]
    except UserError as error:
        return CloakFailure(f"cloaking failed ({error})")
    except Exception as error:  # noqa: BLE001 - reported as this photo's failure record, with the traceback logged
        logger.warning("cloaking %s failed", photo.source, exc_info=True)
        return CloakFailure(f"cloaking failed ({type(error).__name__}: {error})", internal=True)


def encode_as_written(photo: Photo, pixels: np.ndarray, write: WriteOptions = DEFAULT_WRITE,
                      image_format: str | None = None) -> tuple[bytes, np.ndarray]:
    """The cloak's file bytes in ``image_format`` (default: the input's format family) and the pixels those bytes
    decode to: what scoring must see, after our own encoder. Files and uploads alike. The bytes are our own encoder's,
    so they are decoded in this process (the same decoder), not in the decoding worker that bounds untrusted files."""
    data = encode_photo(photo, pixels, write, image_format)
    return data, decode_photo(photo.source or "cloak", data=data).pixels


def write_cloak(data: bytes, destination: Path) -> str:
    """Step 2: write the cloak's bytes (:func:`encode_as_written`) atomically; returns their SHA-256, so the file is
    not read back. Raises OSError."""
    with atomic_writer(destination) as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()


def score_cloak(cloaker: Cloaker, record: PhotoRecord, original: np.ndarray, written: np.ndarray,
                check_codec: Codec | None, result: CloakResult | None = None) -> None:
    """Step 3: quality against the original; the label of the output as written in the cloaker's own (lab) view; and
    the judgement, made the way an attacker sees the photo: the original and the output each through the
    ``check_codec`` chain, then the attacker's crop view (:data:`JUDGE_VIEW`), classified by each surrogate. Protected
    (the success rule of :mod:`comcloak.attacks.success`) on a surrogate: the output's label differs from the
    original's under the same chain and view (targeted: it is the target); the photo is protected when it is on every
    surrogate. A cloak that fools only the lab view is not protected.

    Faces (``result.faces``, when the cloaker cloaks them): each face's verdict after the same chain
    (``engine.faces.FaceStep.verdicts``: the surrogate detector finds it again and the recogniser no longer matches
    it to the clean original); the photo is protected when the classifiers (if attacked) and every face are, and
    under ``protect="faces"`` only with at least one face."""
    record.psnr_db = psnr(original, written)
    record.linf_written = linf(original, written)
    received_cloak = check_codec.apply(written) if check_codec is not None else written
    verdicts = []
    if cloaker.protection.objects:
        verdicts.append(_judge_objects(cloaker, record, original, written, received_cloak, check_codec))
    faces = None if result is None else result.faces
    if cloaker.faces is not None and faces is not None:
        record.faces = cloaker.faces.verdicts(original, received_cloak, faces, result.face_detections)
        if record.faces or not cloaker.protection.objects:
            verdicts.append(faces_protected(record.faces))
    record.success = bool(verdicts) and all(verdicts)


def _judge_objects(cloaker: Cloaker, record: PhotoRecord, original: np.ndarray, written: np.ndarray,
                   received_cloak: np.ndarray, check_codec: Codec | None) -> bool:
    """The classifiers' part of :func:`score_cloak`: the labels and each surrogate's verdict on ``record``; whether
    every surrogate is fooled."""
    record.cloaked_label = int(cloaker.predict(written[None])[0])
    received_original = check_codec.apply(original) if check_codec is not None else original
    names = cloaker.config.classifiers if len(cloaker.config.classifiers) == len(cloaker.surrogates) else \
        tuple(f"surrogate {index + 1}" for index in range(len(cloaker.surrogates)))
    record.protected_on = {}
    for name, surrogate in zip(names, cloaker.surrogates):
        clean = view_top_labels(surrogate, received_original, JUDGE_VIEW, cloaker.device, k=1)[0]
        cloak = view_top_labels(surrogate, received_cloak, JUDGE_VIEW, cloaker.device, k=1)[0]
        if record.check_label is None:  # the table's label columns: the first surrogate's
            record.clean_check_label, record.check_label = clean, cloak
        record.protected_on[name] = bool(attack_succeeded(cloak, record.goal_label, clean, cloaker.config.targeted))
    return all(record.protected_on.values())
