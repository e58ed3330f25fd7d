"""Hand-made files of the kinds that broke comcloak on Pillow's own test images (issue 23), built at test time:
a JPEG with corrupt EXIF, a TIFF whose tags make Pillow warn, PNGs with a transparent colour (tRNS), 12-bit and
nearly black 16-bit TIFFs, a PNG header declaring 50000x50000, and multi-frame files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 48  # above the cloak's 32-pixel floor, small enough to stay fast
_TIFF_SHORT, _TIFF_LONG = 3, 4


def gradient(height: int = SIDE, width: int = SIDE, high: int = 255, low: int = 0) -> np.ndarray:
    """A diagonal ramp from ``low`` to ``high`` (uint16), so every level in between is present."""
    ramp = np.add.outer(np.arange(height), np.arange(width)) / (height + width - 2)
    return np.rint(low + ramp * (high - low)).astype(np.uint16)


def rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)


def bad_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF IFD promises five entries and stops two bytes into the second: Pillow warns "Corrupt EXIF
    data. Expecting to read 12 bytes but only got 2." each time the EXIF is read."""
    entry = struct.pack("<HHII", 0x010F, 2, 4, int.from_bytes(b"Cam\0", "little"))  # Make, ASCII, 4 bytes inline
    exif = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 5) + entry + b"\x00\x01"
    Image.fromarray(rgb()).save(path, "JPEG", exif=exif)
    return path


def _tiff_entries(data: bytes) -> tuple[int, int]:
    """The offset of a little-endian TIFF's first IFD entry and the number of entries."""
    assert data[:4] == b"II*\0"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    return ifd + 2, count


def _patch_tiff(data: bytes, tag: int, count: int) -> bytes:
    """``data`` with one IFD entry's value count changed."""
    patched = bytearray(data)
    first, entries = _tiff_entries(data)
    for offset in range(first, first + 12 * entries, 12):
        if struct.unpack_from("<H", data, offset)[0] == tag:
            struct.pack_into("<I", patched, offset + 4, count)
            return bytes(patched)
    raise AssertionError(f"tag {tag} not in the TIFF")


def warning_tiff(path: Path) -> Path:
    """An RGB TIFF whose ResolutionUnit (a one-value tag) says it has two values: Pillow warns "Metadata Warning,
    tag 296 had too many entries: 2, expected 1" as it opens it."""
    buffer = io.BytesIO()
    Image.fromarray(rgb()).save(buffer, "TIFF", dpi=(72, 72))
    path.write_bytes(_patch_tiff(buffer.getvalue(), 296, count=2))
    return path


def trns_png(path: Path, mode: str) -> tuple[Path, np.ndarray]:
    """An ``L`` or ``RGB`` PNG with a transparent colour (tRNS chunk), and the alpha it means (0 where that colour
    is)."""
    pixels = rgb()
    pixels[:16, :16] = 7  # the transparent colour, in one corner (and wherever the noise has it)
    if mode == "L":
        grey = pixels[..., 0]
        Image.fromarray(grey, "L").save(path, transparency=7)
        alpha = np.where(grey == 7, 0, 255)
    else:
        Image.fromarray(pixels, "RGB").save(path, transparency=(7, 7, 7))
        alpha = np.where((pixels == 7).all(axis=2), 0, 255)
    return path, alpha.astype(np.uint8)


def twelve_bit_tiff(path: Path, samples: np.ndarray) -> Path:
    """An uncompressed greyscale TIFF declaring 12 bits per sample, ``samples`` (0..4095) packed two to three bytes
    (most significant bits first), as scanners and medical cameras write them."""
    height, width = samples.shape
    rows = []
    for row in samples.astype(np.uint32):
        padded = np.append(row, 0) if width % 2 else row
        first, second = padded[0::2], padded[1::2]
        packed = np.stack([first >> 4, ((first & 0xF) << 4) | (second >> 8), second & 0xFF], axis=1)
        rows.append(packed.astype(np.uint8).tobytes()[: (width * 12 + 7) // 8])
    strip = b"".join(rows)
    tags = [(256, _TIFF_LONG, width), (257, _TIFF_LONG, height), (258, _TIFF_SHORT, 12), (259, _TIFF_SHORT, 1),
            (262, _TIFF_SHORT, 1), (273, _TIFF_LONG, 0), (277, _TIFF_SHORT, 1), (278, _TIFF_LONG, height),
            (279, _TIFF_LONG, len(strip))]
    strip_offset = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        value = strip_offset if tag == 273 else value
        packed_value = struct.pack("<HH", value, 0) if kind == _TIFF_SHORT else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed_value
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip)
    return path


def sixteen_bit_tiff(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit greyscale TIFF of ``samples``."""
    Image.fromarray(samples.astype(np.uint16)).save(path, "TIFF")
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, width: int = 50000, height: int = 50000) -> Path:
    """A 57-byte PNG whose header declares ``width`` x ``height`` pixels (2.5 gigapixels by default)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    return path


def animated_gif(path: Path) -> Path:
    frames = [Image.fromarray(rgb(0)), Image.fromarray(rgb(1))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def multipage_tiff(path: Path) -> Path:
    pages = [Image.fromarray(rgb(seed)) for seed in range(3)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def multi_picture_jpeg(path: Path) -> Path:
    """A two-image MPO (a photo and a second picture, as phones write gain maps and stereo cameras pairs)."""
    pictures = [Image.fromarray(rgb(0)), Image.fromarray(rgb(1))]
    pictures[0].save(path, "MPO", save_all=True, append_images=pictures[1:])
    return path


def rgba_bmp(path: Path, pixels: np.ndarray) -> Path:
    """A 32-bit BMP with an alpha mask (BITMAPV4HEADER, BI_BITFIELDS), which Pillow reads as RGBA but cannot write:
    its own RGBA BMPs read back as RGB. ``pixels``: uint8 (H, W, 4)."""
    height, width = pixels.shape[:2]
    rows = pixels[::-1][..., [2, 1, 0, 3]].tobytes()  # bottom-up, B G R A: the masks below
    info = struct.pack("<IiiHHIIiiII4I", 108, width, height, 1, 32, 3, len(rows), 2835, 2835, 0, 0,
                       0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000) + struct.pack("<I", 0x73524742) + bytes(48)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + len(info) + len(rows), 0, 0, 14 + len(info)) + info + rows)
    return path
