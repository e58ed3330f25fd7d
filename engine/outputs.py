"""Where each cloak is written: output names without false collisions, the ``--format`` choice, and the layout checks
that keep outputs away from the inputs. Torch-free; reads only file headers.

Naming rules (also in docs/inputs-outputs.md):

- A photo keeps its relative path and name; its suffix is its own when its format is written back (``--format keep``,
  the default: JPEG, PNG, WebP, TIFF and BMP stay themselves) or the chosen format's (``--format jpeg|png|webp``).
  Other formats (HEIC, AVIF, GIF, ...) become PNG under ``keep``: lossless, so the cloak is not smoothed away.
- ``a.jpg`` and ``a.png`` are written as ``a.jpg`` and ``a.png``: different files, no collision.
- A real collision (``a.gif`` and ``a.png`` both want ``a.png``, or any two under ``--format jpeg``): the input whose
  own name is the output name keeps it, else the first in sorted order; each other one is renamed
  ``STEM.SUFFIX.EXT`` after its own suffix (``a.gif.png``), with ``~2``, ``~3``, ... before the extension if even that
  is taken. Deterministic: the same inputs always get the same names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from comcloak.codecs.photos import PhotoError, PhotoHeader, output_format, read_header
from comcloak.errors import UserError

OUTPUT_FORMATS = {"keep": None, "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}  # --format: Pillow format names
DEFAULT_OUTPUT_FORMAT = "keep"
# The suffixes of each format comcloak writes (codecs.photos.WRITTEN_FORMATS), the usual one first.
FORMAT_SUFFIXES = {"JPEG": (".jpg", ".jpeg", ".jpe"), "PNG": (".png",), "WEBP": (".webp",),
                   "TIFF": (".tif", ".tiff"), "BMP": (".bmp",)}


class OutputLayoutError(UserError, ValueError):
    """The output folder would overwrite or live inside the inputs."""


@dataclass(frozen=True)
class PlannedPhoto:
    """One input and where its cloak goes: ``destination`` and ``image_format`` (Pillow's name), or ``error`` when its
    header cannot be read (it becomes a failure record)."""

    source: Path
    relative: Path
    header: PhotoHeader | None = None
    destination: Path | None = None
    image_format: str | None = None
    error: str | None = None


def written_format(photo_format: str, choice: str = DEFAULT_OUTPUT_FORMAT, alpha: bool = False) -> str:
    """The Pillow format a photo of ``photo_format`` (with ``alpha`` or not) is written in under ``--format choice``."""
    if choice not in OUTPUT_FORMATS:
        raise UserError(f"--format takes {', '.join(OUTPUT_FORMATS)}, got {choice!r}")
    return OUTPUT_FORMATS[choice] or output_format(photo_format, alpha)


def output_name(relative: Path, image_format: str) -> Path:
    """``relative`` with the suffix of ``image_format``: its own when it already is one of that format's."""
    if relative.suffix.lower() in FORMAT_SUFFIXES[image_format]:
        return relative
    return relative.with_name(relative.stem + FORMAT_SUFFIXES[image_format][0])


def refuse_links_to_output(links: Iterable[Path], output_dir: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`OutputLayoutError` if any symlink met under the inputs (``CollectedInputs.links``, dangling ones
    included) leads to the output folder, into it, or to a folder holding it: the outputs would be read back as inputs
    (a first run writes them, a rerun cloaks them again). The error names the input holding the link."""
    resolved_output = Path(output_dir).absolute().resolve()
    given = [Path(item) for item in inputs]
    for link in links:
        target = link.resolve()
        if target == resolved_output or resolved_output in target.parents or target in resolved_output.parents:
            holder = next((item for item in given if item == link or item in link.parents), link)
            raise OutputLayoutError(f"input {holder} reaches the output folder {resolved_output} through the symlink "
                                    f"{link} -> {target}; remove the link or choose another output folder")


def plan_outputs(pairs: list[tuple[Path, Path]], output_dir: Path, inputs: Iterable[str | os.PathLike],
                 choice: str = DEFAULT_OUTPUT_FORMAT) -> list[PlannedPhoto]:
    """Plan every ``(source, relative)`` pair into ``output_dir`` by the module's rules, in the order of ``pairs``.

    Raises :class:`OutputLayoutError` when the output folder lies inside an input folder or an output would replace
    an input; unreadable headers become planned failures, not errors.
    """
    output_dir = Path(output_dir).absolute()  # records name outputs independently of the working folder
    resolved_output = output_dir.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if source.is_dir() and (resolved_output == source or source in resolved_output.parents):
            raise OutputLayoutError(f"output folder {resolved_output} is inside input folder {source}; choose "
                                    "another")
    planned: list[PlannedPhoto] = []
    for source, relative in pairs:
        try:
            header = read_header(source)
        except PhotoError as error:
            planned.append(PlannedPhoto(source, relative, error=str(error)))
            continue
        image_format = written_format(header.format, choice, header.alpha)
        planned.append(PlannedPhoto(source, relative, header, output_name(relative, image_format), image_format))
    planned = _resolve_collisions(planned)
    sources = {source.resolve(): source for source, _ in pairs}
    for plan in planned:
        overwritten = None if plan.destination is None else sources.get((output_dir / plan.destination).resolve())
        if overwritten is not None:
            raise OutputLayoutError(f"output {output_dir / plan.destination} would overwrite the input "
                                    f"{overwritten}; choose another folder")
    return [plan if plan.destination is None else
            PlannedPhoto(plan.source, plan.relative, plan.header, output_dir / plan.destination, plan.image_format)
            for plan in planned]


def _resolve_collisions(planned: list[PlannedPhoto]) -> list[PlannedPhoto]:
    """Rename all but one claimant of each output name (relative names here), deterministically."""
    claims: dict[Path, list[int]] = {}
    for index, plan in enumerate(planned):
        if plan.destination is not None:
            claims.setdefault(plan.destination, []).append(index)
    taken = set(claims)
    result = list(planned)
    for destination, indices in sorted(claims.items()):
        if len(indices) == 1:
            continue
        ordered = sorted(indices, key=lambda i: (planned[i].relative != destination, str(planned[i].relative)))
        for index in ordered[1:]:
            plan = planned[index]
            extension = destination.suffix
            base = f"{plan.relative.stem}.{plan.relative.suffix.lstrip('.') or 'file'}"
            candidate, counter = destination.with_name(base + extension), 1
            while candidate in taken:
                counter += 1
                candidate = destination.with_name(f"{base}~{counter}{extension}")
            taken.add(candidate)
            result[index] = PlannedPhoto(plan.source, plan.relative, plan.header, candidate, plan.image_format)
    return result
