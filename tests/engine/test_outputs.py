"""Output names (issue 14): no false collisions, deterministic renames for real ones, --format, layout refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comcloak.codecs.photos import collect_photos
from comcloak.engine.outputs import OutputLayoutError, output_name, plan_outputs, written_format


def _write(path: Path, image_format: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(path, format=image_format)
    return path


def _names(tmp_path: Path, files: list[str], choice: str = "keep") -> dict[str, str]:
    folder = tmp_path / "in"
    for name in files:
        _write(folder / name, "PNG" if name.endswith(".gif.png") else None)
    plan = plan_outputs(collect_photos([folder]), tmp_path / "out", [folder], choice)
    return {str(p.relative): str(p.destination.relative_to(tmp_path / "out")) for p in plan}


def test_same_stem_different_formats_is_no_collision(tmp_path: Path) -> None:
    assert _names(tmp_path, ["a.jpg", "a.png", "photo.bmp", "photo.tif"]) == {
        "a.jpg": "a.jpg", "a.png": "a.png", "photo.bmp": "photo.bmp", "photo.tif": "photo.tif"}


def test_a_real_collision_gets_a_deterministic_rename(tmp_path: Path) -> None:
    # a.gif is written as PNG under keep: it would take a.png, which a.png keeps (its own name)
    assert _names(tmp_path, ["a.gif", "a.png"]) == {"a.gif": "a.gif.png", "a.png": "a.png"}
    again = _names(tmp_path / "again", ["a.png", "a.gif"])
    assert again == {"a.gif": "a.gif.png", "a.png": "a.png"}


def test_format_choice_renames_all_but_the_owner(tmp_path: Path) -> None:
    names = _names(tmp_path, ["a.jpg", "a.png", "a.webp", "b.JPEG"], choice="jpeg")
    assert names == {"a.jpg": "a.jpg", "a.png": "a.png.jpg", "a.webp": "a.webp.jpg", "b.JPEG": "b.JPEG"}


def test_a_rename_that_is_taken_gets_a_counter(tmp_path: Path) -> None:
    names = _names(tmp_path, ["a.gif", "a.png", "a.gif.png"])
    assert names == {"a.gif": "a.gif~2.png", "a.png": "a.png", "a.gif.png": "a.gif.png"}


def test_written_format_and_names() -> None:
    assert written_format("GIF") == "PNG" and written_format("JPEG") == "JPEG"
    assert written_format("PNG", "webp") == "WEBP" and written_format("MPO") == "PNG"
    assert output_name(Path("x/a.JPEG"), "JPEG") == Path("x/a.JPEG")
    assert output_name(Path("x/a.heic"), "PNG") == Path("x/a.png")


def test_layouts_that_touch_the_inputs_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _write(folder / "a.png")
    with pytest.raises(OutputLayoutError, match="inside input folder"):
        plan_outputs(collect_photos([folder]), folder / "out", [folder])
    with pytest.raises(OutputLayoutError, match="would overwrite the input"):
        plan_outputs([(folder / "a.png", Path("a.png"))], folder, [folder / "a.png"])


def test_unreadable_headers_are_planned_failures(tmp_path: Path) -> None:
    bad = tmp_path / "in" / "bad.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    [plan] = plan_outputs([(bad, Path("bad.jpg"))], tmp_path / "out", [bad])
    assert plan.destination is None and "not a readable image" in plan.error
