"""What ``comcloak cloak`` shows and keeps of a run: the closing table (one row per input, judged as an attacker sees
the photo), the failure and skip lines, and the JSON report (:func:`write_report`, recognised by :func:`is_report`
so that a rerun replaces a report and nothing else)."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import torch

from comcloak.atomic import write_json
from comcloak.engine.pipeline import PhotoRecord
from comcloak.engine.protection import PROTECTED, face_summary
from comcloak.errors import printable
from comcloak.models.labels import imagenet_class_name


def _label(index: int | None) -> str:
    return "-" if index is None else f"{index} {imagenet_class_name(index)}"[:28]


def _protected(record: PhotoRecord) -> str:
    """``yes``/``no``; for an ensemble, ``no (1/2)`` when only some surrogates are fooled (faces: ``success``)."""
    if record.success or not record.protected_on or len(record.protected_on) == 1 \
            or all(record.protected_on.values()):  # every surrogate fooled, a face not protected: plain "no"
        return "yes" if record.success else "no"
    return f"no ({sum(record.protected_on.values())}/{len(record.protected_on)})"


def _display_width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _display_width(text))


def reason_line(record: PhotoRecord) -> str:
    """``STATUS: SOURCE: REASON`` of a failed or skipped input, escaped (:func:`comcloak.errors.printable`), the
    path once: the table's lines and ``-q``'s."""
    reason = record.error or ""
    if reason.startswith(f"{record.source}: "):  # errors name their file; the line already does
        reason = reason[len(record.source) + 2:]
    return f"{record.status}: {printable(record.source)}: {printable(reason)}"


def steps_summary(records: list[PhotoRecord]) -> dict[str, float] | None:
    """The attack steps the cloaked photos used (per-photo stopping, ``--stop-after``): ``{"mean", "min", "max"}``,
    or None when no record carries them (faces only, records of an older comcloak).

    Example:
        >>> steps_summary([PhotoRecord("a.jpg", "cloaked", steps_used=4), PhotoRecord("b.jpg", "cloaked",
        ...                                                                     steps_used=10)])
        {'mean': 7.0, 'min': 4, 'max': 10}
    """
    steps = [record.steps_used for record in records if record.status == "cloaked" and record.steps_used is not None]
    if not steps:
        return None
    return {"mean": round(sum(steps) / len(steps), 2), "min": min(steps), "max": max(steps)}


def format_table(records: list[PhotoRecord], check_spec: str, names: dict[str, str] | None = None,
                 show_steps: bool = False) -> str:
    """A plain-text table, one row per input, then one line per failed or skipped input with its reason, and a
    summary. Protection is judged as an attacker sees the photo (after ``check_spec``, in the crop view); the
    cloaker's own view is a separate, labelled lab-view column. Rows cloaked by an earlier run (resumed from the
    manifest) are marked ``*``. ``names``: the name each source is shown by (a symlink's own), else its file name.
    When faces were cloaked (a record carries ``faces``), a ``faces (after CHECK)`` column gives each photo's face
    verdicts (``2/2 protected``, ``no faces``) and the summary counts the faces. ``show_steps`` (per-photo stopping
    on) adds a ``steps`` column and the mean and range of the steps used to the summary."""
    judge = f"after {check_spec}, crop view"
    with_faces = any(record.faces is not None for record in records)
    header = ("photo", "size", f"clean ({judge})", f"cloak ({judge})", "protected", "cloak (lab view)", "PSNR dB")
    header += (f"faces (after {check_spec})",) if with_faces else ()
    header += ("steps",) if show_steps else ()
    rows, reasons = [], []
    for record in records:
        name = printable((names or {}).get(record.source) or Path(record.source).name)
        faces = (face_summary(record.faces),) if with_faces else ()  # then the steps column, when shown
        faces += ("-" if record.steps_used is None else record.steps_used,) if show_steps else ()
        if record.status != "cloaked":
            rows.append((name, "-", "-", "-", record.status, "-", "-", *faces))
            reasons.append(reason_line(record))
            continue
        rows.append((
            name,
            f"{record.width}x{record.height}",
            _label(record.clean_check_label),
            _label(record.check_label),
            _protected(record) + (" *" if record.resumed else ""),
            _label(record.cloaked_label),
            "inf" if record.psnr_db is None or math.isinf(record.psnr_db) else f"{record.psnr_db:.1f}",
            *faces,
        ))
    widths = [max(_display_width(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"Judged as an attacker sees the photo: {check_spec}, then shorter side 256 and centre crop 224, "
             "classified by each surrogate (protected: on all of them; the label columns are the first one's; the "
             "lab-view column is the cloaker's own whole-photo view, not protection)."]
    if with_faces:
        lines.append(f"Faces: each detected face after {check_spec}, found again by the surrogate detector (YuNet) "
                     "and no longer matched to the clean face by the surrogate recogniser (SFace); a photo is "
                     "protected when the classifiers (if attacked) and all its faces are; a photo without faces is "
                     "never protected by the face cloak.")
    lines += ["  ".join(_pad(str(cell), width) for cell, width in zip(row, widths)).rstrip()
              for row in [header, *rows]]
    lines.insert(len(lines) - len(rows), "  ".join("-" * width for width in widths))
    lines += reasons
    cloaked = [record for record in records if record.status == "cloaked"]
    protected = sum(bool(record.success) for record in cloaked)
    resumed = sum(record.resumed for record in cloaked)
    failed = sum(record.status == "failed" for record in records)
    skipped = sum(record.status == "skipped" for record in records)
    earlier = f" ({resumed} by an earlier run, marked *)" if resumed else ""
    faces = ""
    if with_faces:
        verdicts = [face["verdict"] for record in records for face in record.faces or ()]
        without = sum(record.faces == [] for record in records)
        faces = f"; faces: {verdicts.count(PROTECTED)}/{len(verdicts)} protected, {without} photo(s) without faces"
    steps = steps_summary(records) if show_steps else None
    if steps is not None:
        faces += f"; steps used: mean {steps['mean']:.1f}, {steps['min']}-{steps['max']}"
    lines.append(f"{len(cloaked)} cloaked{earlier}, {protected} protected after {check_spec} (attacker's crop view), "
                 f"{skipped} skipped, {failed} failed{faces}")
    return "\n".join(lines)


def write_report(records: list[PhotoRecord], path: Path, settings: dict) -> None:
    """Write a JSON report (settings and one record per photo) atomically; :func:`is_report` knows it again."""
    payload = {"settings": settings, "torch": torch.__version__, "photos": [record.as_dict() for record in records]}
    steps = steps_summary(records)
    if steps is not None:  # each photo's record has its own steps_used
        payload["steps_used"] = steps
    write_json(payload, path)


_REPORT_HEAD = b'{\n  "settings": '  # how write_json starts the report above


def is_report(path: Path) -> bool:
    """Whether the regular file ``path`` holds a :func:`write_report` report (a rerun may replace it, nothing else);
    read whole only when it starts like one."""
    with open(path, "rb") as handle:
        if handle.read(len(_REPORT_HEAD)) != _REPORT_HEAD:
            return False
        handle.seek(0)
        try:
            payload = json.load(handle)
        except ValueError:  # UnicodeDecodeError included
            return False
    return isinstance(payload, dict) and {"settings", "torch", "photos"} <= set(payload)
