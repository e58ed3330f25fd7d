"""A contact sheet: one row per photo, original | cloaked | amplified difference; for one photo also the perceptual
budget: each pixel's L-inf bound as a heat map with its scale (:class:`BudgetMap`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from comcloak.atomic import atomic_writer
from comcloak.attacks.config import UNIFORM_BUDGET

TILE_HEIGHT = 224
GAP = 4
SCALE_WIDTH = 64  # the colour scale's tile: a bar and its labels
SCALE_BAR = 14
SCALE_TICKS = 5  # labelled values on the scale, 0 to its top


@dataclass(frozen=True)
class BudgetMap:
    """The per-pixel L-inf budget a sheet shows beside one photo's row.

    Attributes:
        caption: the row (its photo's caption) the map belongs to.
        factors: (H, W) factors of eps at full resolution (``comcloak.attacks.budget.full_resolution_budget``), or
            None under the uniform budget (eps at every pixel: the panel is one colour and the caption says so).
        top: the scale's top, as a factor of eps (the texture budget's ceiling, for every budget: the uniform map
            is then a middle colour, comparable with a texture map).
        kind: the budget's name (``AttackConfig.budget``), for the caption.

    Example:
        >>> BudgetMap("rocket.jpg", factors, config.budget_ceiling, config.budget)
    """

    caption: str
    factors: np.ndarray | None
    top: float = 1.0
    kind: str = UNIFORM_BUDGET


def amplified_difference(original: np.ndarray, cloaked: np.ndarray, eps: float) -> np.ndarray:
    """Map the signed change [-eps, +eps] (0–255 scale) onto the full 0–255 range around mid-grey."""
    difference = cloaked.astype(np.float32) - original.astype(np.float32)
    return np.clip(128.0 + difference * (127.0 / max(eps, 1e-6)), 0, 255).astype(np.uint8)


def heat(values: np.ndarray) -> np.ndarray:
    """A black-red-yellow-white heat colour (..., 3) uint8 of ``values`` (...) in [0, 1] (clipped), monotone in
    brightness so it also reads in grey.

    Example:
        >>> heat(np.array([0.0, 1.0])).tolist()
        [[0, 0, 0], [255, 255, 255]]
    """
    scaled = 3.0 * np.clip(values, 0.0, 1.0)[..., None]
    return np.round(255 * np.clip(scaled - np.arange(3), 0.0, 1.0)).astype(np.uint8)


def budget_tiles(budget: BudgetMap, shape: tuple[int, int], eps: float) -> tuple[list[Image.Image], str]:
    """The heat-map tile of ``budget`` for a photo of ``shape`` (H, W), its colour scale (0 to ``top · eps`` on the
    0–255 scale) and the caption words that say what ran."""
    top = max(budget.top, 1.0)
    factors = np.ones(shape, np.float32) if budget.factors is None else budget.factors
    tile = _tile(heat(factors / top))
    ImageDraw.Draw(tile).rectangle([0, 0, tile.width - 1, tile.height - 1], outline="grey")  # white is on scale
    scale = Image.new("RGB", (SCALE_WIDTH, TILE_HEIGHT), "white")
    levels = np.linspace(1.0, 0.0, TILE_HEIGHT)[:, None].repeat(SCALE_BAR, 1)  # top of the bar = top of the scale
    scale.paste(Image.fromarray(heat(levels)), (0, 0))
    draw = ImageDraw.Draw(scale)
    for tick in range(SCALE_TICKS):
        fraction = tick / (SCALE_TICKS - 1)
        y = round((TILE_HEIGHT - 1) * (1 - fraction))
        draw.line([(SCALE_BAR, y), (SCALE_BAR + 3, y)], fill="black")
        draw.text((SCALE_BAR + 5, min(max(y - 6, 0), TILE_HEIGHT - 12)), f"{fraction * top * eps:.1f}", fill="black")
    if budget.factors is None:
        words = f"objects cloak's budget, uniform: eps everywhere ({eps:g}/255)"
    else:
        low, high = eps * factors.min(), eps * factors.max()
        words = f"objects cloak's budget, {budget.kind}: {low:.1f}-{high:.1f}/255 per pixel"
    return [tile, scale], words


def _tile(pixels: np.ndarray) -> Image.Image:
    image = Image.fromarray(pixels)
    width = max(1, round(image.width * TILE_HEIGHT / image.height))
    return image.resize((width, TILE_HEIGHT), Image.Resampling.LANCZOS)


def write_sheet(rows: list[tuple[str, np.ndarray, np.ndarray]], eps: float, destination: Path,
                budget: BudgetMap | None = None) -> Path:
    """Write the sheet for ``(caption, original, cloaked)`` rows to ``destination`` (PNG), atomically; the row
    captioned ``budget.caption`` also shows the budget map and its scale (:func:`budget_tiles`).

    The difference column is computed at full resolution and then shrunk, so it shows the real pattern's average.
    """
    tiles = []
    for caption, original, cloaked in rows:
        row = [_tile(original), _tile(cloaked), _tile(amplified_difference(original, cloaked, eps))]
        label = f"{caption}   (original | cloaked | difference x{127 / max(eps, 1e-6):.0f}"
        if budget is not None and caption == budget.caption:
            extra, words = budget_tiles(budget, original.shape[:2], eps)
            row += extra
            label += f" | {words}"
        tiles.append((label + ")", row))
    caption_height = 16
    width = max(sum(t.width for t in row) + GAP * (len(row) + 1) for _, row in tiles) if tiles else 1
    height = len(tiles) * (TILE_HEIGHT + caption_height + GAP) + GAP
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    top = GAP
    for label, row in tiles:
        draw.text((GAP, top), label, fill="black")
        left = GAP
        for tile in row:
            sheet.paste(tile, (left, top + caption_height))
            left += tile.width + GAP
        top += TILE_HEIGHT + caption_height + GAP
    with atomic_writer(destination) as handle:
        sheet.save(handle, format="PNG")
    return destination


def write_zoom_strip(panels: list[tuple[str, np.ndarray]], destination: Path, zoom: int = 2) -> Path:
    """Write ``(label, pixels)`` panels (each (h, w, 3) uint8, e.g. the same crop of an original and its cloaks)
    side by side, each enlarged ``zoom`` times by pixel repetition (nearest neighbour: no filter hides or adds a
    pattern), with its label above, to ``destination`` (PNG), atomically.

    Example:
        >>> write_zoom_strip([("original", crop), ("balanced", cloak_crop)], Path("sky.png"))
    """
    tiles = [(label, Image.fromarray(pixels).resize((pixels.shape[1] * zoom, pixels.shape[0] * zoom),
                                                    Image.Resampling.NEAREST)) for label, pixels in panels]
    caption_height = 16
    width = sum(tile.width for _, tile in tiles) + GAP * (len(tiles) + 1)
    height = max(tile.height for _, tile in tiles) + caption_height + 2 * GAP
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    left = GAP
    for label, tile in tiles:
        draw.text((left, GAP), label, fill="black")
        strip.paste(tile, (left, GAP + caption_height))
        left += tile.width + GAP
    with atomic_writer(destination) as handle:
        strip.save(handle, format="PNG")
    return destination
