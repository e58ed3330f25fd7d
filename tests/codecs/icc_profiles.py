"""Tiny hand-built ICC profiles for tests (no ICC files ship on these machines): a CMYK printer profile whose A2B0
lookup table prints pure cyan as red, so a conversion through it is told apart from Pillow's naive CMYK->RGB at a
glance, and a greyscale profile."""

from __future__ import annotations

import struct

_D50 = (0.9642, 1.0, 0.8249)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _header(size: int, device_class: bytes, space: bytes, pcs: bytes) -> bytes:
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, device_class, space, pcs)
    header += struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"APPL" + bytes(4) + bytes(4) + bytes(4)
    header += bytes(8) + bytes(4) + struct.pack(">I", 0) + b"".join(_s15(v) for v in _D50) + bytes(4)
    return header.ljust(128, b"\0")


def _profile(device_class: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        body = body + bytes(-len(body) % 4)
        table += struct.pack(">4sII", signature, offset + len(data), len(body))
        data += body
    size = offset + len(data)
    return _header(size, device_class, space, pcs) + table + data


def _text_description(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(4 + 4 + 2 + 1 + 67)


def _xyz(values: tuple[float, float, float]) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in values)


RED_FOR_CYAN = (50.0, 60.0, 40.0)  # the Lab colour cmyk_test_profile gives pure cyan: naive conversion gives cyan


def cmyk_test_profile() -> bytes:
    """A CMYK output profile unlike any real press: paper white, K black, greys for mixed inks, and pure cyan printed
    as the red :data:`RED_FOR_CYAN` -- so a conversion through it is told apart from Pillow's naive one at a glance."""
    grid_points, channels_in, channels_out = 2, 4, 3
    lut = b"mft2" + bytes(4) + struct.pack(">BBBB", channels_in, channels_out, grid_points, 0)
    lut += b"".join(_s15(1.0 if row == col else 0.0) for row in range(3) for col in range(3))
    lut += struct.pack(">HH", 2, 2)
    lut += struct.pack(">2H", 0, 0xFFFF) * channels_in
    for index in range(grid_points**channels_in):  # C varies slowest, K fastest
        c, m, y, k = ((index >> shift) & 1 for shift in (3, 2, 1, 0))
        if k:
            lab = (0.0, 0.0, 0.0)
        elif (c, m, y) == (1, 0, 0):
            lab = RED_FOR_CYAN
        else:
            lab = (100.0 - 30.0 * (c + m + y), 0.0, 0.0)
        lut += struct.pack(">3H", round(lab[0] / 100 * 0xFF00), *(round((v + 128) * 256) for v in lab[1:]))
    lut += struct.pack(">2H", 0, 0xFFFF) * channels_out
    tags = [(b"desc", _text_description("comcloak test CMYK")), (b"wtpt", _xyz(_D50)), (b"A2B0", lut),
            (b"cprt", b"text" + bytes(4) + b"none\0")]
    return _profile(b"prtr", b"CMYK", b"Lab ", tags)


def grey_profile() -> bytes:
    """A greyscale display profile (gamma 2.2)."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256))
    tags = [(b"desc", _text_description("comcloak test GRAY")), (b"wtpt", _xyz(_D50)), (b"kTRC", curve),
            (b"cprt", b"text" + bytes(4) + b"none\0")]
    return _profile(b"mntr", b"GRAY", b"XYZ ", tags)
