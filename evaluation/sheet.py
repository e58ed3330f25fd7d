"""A contact sheet: one row per photo, original | cloaked | amplified difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from comcloak.atomic import atomic_writer

TILE_HEIGHT = 224
GAP = 4


def amplified_difference(original: np.ndarray, cloaked: np.ndarray, eps: float) -> np.ndarray:
    """Map the signed change [-eps, +eps] (0–255 scale) onto the full 0–255 range around mid-grey."""
    difference = cloaked.astype(np.float32) - original.astype(np.float32)
    return np.clip(128.0 + difference * (127.0 / max(eps, 1e-6)), 0, 255).astype(np.uint8)


def _tile(pixels: np.ndarray) -> Image.Image:
    image = Image.fromarray(pixels)
    width = max(1, round(image.width * TILE_HEIGHT / image.height))
    return image.resize((width, TILE_HEIGHT), Image.Resampling.LANCZOS)


def write_sheet(rows: list[tuple[str, np.ndarray, np.ndarray]], eps: float, destination: Path) -> Path:
    """Write the sheet for ``(caption, original, cloaked)`` rows to ``destination`` (PNG), atomically.

    The difference column is computed at full resolution and then shrunk, so it shows the real pattern's average.
    """
    tiles = [(caption, [_tile(original), _tile(cloaked), _tile(amplified_difference(original, cloaked, eps))])
             for caption, original, cloaked in rows]
    caption_height = 16
    width = max(sum(t.width for t in row) + GAP * 4 for _, row in tiles) if tiles else 1
    height = len(tiles) * (TILE_HEIGHT + caption_height + GAP) + GAP
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    top = GAP
    for caption, row in tiles:
        label = f"{caption}   (original | cloaked | difference x{127 / max(eps, 1e-6):.0f})"
        draw.text((GAP, top), label, fill="black")
        left = GAP
        for tile in row:
            sheet.paste(tile, (left, top + caption_height))
            left += tile.width + GAP
        top += TILE_HEIGHT + caption_height + GAP
    with atomic_writer(destination) as handle:
        sheet.save(handle, format="PNG")
    return destination
