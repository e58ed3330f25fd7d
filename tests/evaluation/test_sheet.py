"""The demo sheet: one row per photo, and the budget map (heat tile and its scale) beside one photo, saying which
budget ran."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from comcloak.attacks.presets import preset_config
from comcloak.cli.demo import sheet_budget
from comcloak.engine.protection import Protection
from comcloak.evaluation.sheet import GAP, SCALE_WIDTH, TILE_HEIGHT, heat, write_sheet, write_zoom_strip


def rows(sample_photos: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    cloak = lambda photo: np.clip(photo.astype(int) + 3, 0, 255).astype(np.uint8)  # noqa: E731
    return [(f"{name}.jpg", sample_photos[name], cloak(sample_photos[name])) for name in ("chelsea", "rocket")]


def tile_width(photo: np.ndarray) -> int:
    return round(photo.shape[1] * TILE_HEIGHT / photo.shape[0])


@pytest.mark.parametrize("budget", ["uniform", "texture"])
def test_the_sheet_shows_the_budget_map_of_one_photo(tmp_path: Path, sample_photos, budget: str) -> None:
    photos = rows(sample_photos)
    cloaker = SimpleNamespace(config=preset_config("balanced", budget=budget), protection=Protection())
    shown = sheet_budget(cloaker, photos)
    assert shown.caption == "rocket.jpg" and (shown.factors is None) == (budget == "uniform")
    sheet = write_sheet(photos, 5.0, tmp_path / "sheet.png", shown)
    chelsea, rocket = tile_width(sample_photos["chelsea"]), tile_width(sample_photos["rocket"])
    with Image.open(sheet) as image:
        pixels = np.asarray(image.convert("RGB"))
    # The rocket's row has five panels (original, cloak, difference, map, scale); the cat's three.
    assert pixels.shape == (2 * (TILE_HEIGHT + 16 + GAP) + GAP, 4 * rocket + SCALE_WIDTH + 6 * GAP, 3)
    assert 3 * chelsea + 4 * GAP < pixels.shape[1]
    top = 2 * GAP + TILE_HEIGHT + 2 * 16  # the rocket row's tiles
    panel = pixels[top : top + TILE_HEIGHT, GAP + 3 * (rocket + GAP) : GAP + 4 * rocket + 3 * GAP]
    colours = np.unique(panel[1:-1, 1:-1].reshape(-1, 3), axis=0)  # inside the grey outline
    if budget == "uniform":  # one colour: eps everywhere, on the texture budget's scale (its ceiling is 2)
        assert colours.tolist() == [heat(np.array(0.5)).tolist()]
    else:  # the sky is darker than the launch towers
        assert len(colours) > 50 and panel[:40].mean() < panel.mean()


def test_no_budget_map_without_a_classifier_cloak(sample_photos) -> None:
    cloaker = SimpleNamespace(config=preset_config("balanced"), protection=Protection(protect="faces"))
    assert sheet_budget(cloaker, rows(sample_photos)) is None


def test_heat_is_monotone_in_brightness() -> None:
    colours = heat(np.linspace(0, 1, 64)).astype(int).sum(1)
    assert colours[0] == 0 and colours[-1] == 765 and np.all(np.diff(colours) >= 0)


def test_the_zoom_strip_repeats_pixels(tmp_path: Path) -> None:
    crop = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    strip = write_zoom_strip([("original", crop), ("cloak", 255 - crop)], tmp_path / "strip.png", zoom=2)
    with Image.open(strip) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (40 + 16 + 2 * GAP, 2 * 60 + 3 * GAP, 3)
    zoomed = pixels[GAP + 16 : GAP + 16 + 40, GAP : GAP + 60]
    assert np.array_equal(zoomed, crop.repeat(2, 0).repeat(2, 1))  # nearest neighbour: no filter
