"""--metadata (issue 14) on real EXIF blocks: a camera-style block with GPS, serial numbers, a MakerNote and an IFD1
thumbnail (hand-assembled, as cameras write it; Pillow cannot write thumbnails), plus an XMP packet."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from comcloak.codecs.metadata import output_exif
from comcloak.codecs.photos import WriteOptions, load_photo, save_photo

THUMB_MARK = b"UNCLOAKED-THUMBNAIL"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6" '
       b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="52,31N"/></rdf:RDF></x:xmpmeta>')


def _thumbnail() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(buffer, "JPEG", comment=THUMB_MARK)
    return buffer.getvalue()


def camera_exif() -> bytes:
    """A big-endian TIFF/EXIF block: IFD0 (make, model, orientation 6, date, artist, copyright, software, Exif and
    GPS pointers), the Exif IFD (original date, serial numbers, MakerNote), the GPS IFD, and IFD1 with a thumbnail."""
    entries: dict[str, list[tuple[int, int, int, bytes]]] = {"ifd0": [], "exif": [], "gps": [], "ifd1": []}
    ascii_tag = 2

    def text(ifd: str, tag: int, value: str) -> None:
        data = value.encode() + b"\0"
        entries[ifd].append((tag, ascii_tag, len(data), data))

    text("ifd0", 0x010F, "Canon")
    text("ifd0", 0x0110, "EOS 5D")
    entries["ifd0"].append((0x0112, 3, 1, struct.pack(">HH", 6, 0)))
    text("ifd0", 0x0132, "2024:05:01 10:00:00")
    text("ifd0", 0x013B, "Artist Person")
    text("ifd0", 0x8298, "(c) Jane Doe")
    text("ifd0", 0x0131, "CameraFW 1.2")
    text("exif", 0x9003, "2024:05:01 09:59:58")
    text("exif", 0xA431, "BODY-SERIAL-123")
    text("exif", 0xA435, "LENS-SERIAL-456")
    entries["exif"].append((0x927C, 7, 16, b"MAKERNOTE-SECRET"))
    text("gps", 0x0001, "N")
    entries["gps"].append((0x0002, 5, 3, struct.pack(">6I", 52, 1, 31, 1, 0, 1)))
    thumbnail = _thumbnail()

    # Layout: header, IFD0, Exif IFD, GPS IFD, IFD1, then every value longer than 4 bytes, then the thumbnail.
    def ifd_size(ifd: str, extra: int) -> int:
        return 2 + 12 * (len(entries[ifd]) + extra) + 4

    sizes = {"ifd0": ifd_size("ifd0", 2), "exif": ifd_size("exif", 0), "gps": ifd_size("gps", 0),
             "ifd1": ifd_size("ifd1", 2)}
    offsets, cursor = {}, 8
    for name in ("ifd0", "exif", "gps", "ifd1"):
        offsets[name], cursor = cursor, cursor + sizes[name]
    blob, blob_start = b"", cursor
    long_values = {}
    for name in ("ifd0", "exif", "gps"):
        for tag, _, _, data in entries[name]:
            if len(data) > 4:
                long_values[(name, tag)] = blob_start + len(blob)
                blob += data + bytes(len(data) % 2)
    thumb_offset = blob_start + len(blob)
    entries["ifd0"] += [(0x8769, 4, 1, struct.pack(">I", offsets["exif"])),
                        (0x8825, 4, 1, struct.pack(">I", offsets["gps"]))]
    entries["ifd1"] += [(0x0201, 4, 1, struct.pack(">I", thumb_offset)),
                        (0x0202, 4, 1, struct.pack(">I", len(thumbnail)))]
    out = b"MM\0*" + struct.pack(">I", 8)
    for name in ("ifd0", "exif", "gps", "ifd1"):
        rows = sorted(entries[name])
        out += struct.pack(">H", len(rows))
        for tag, kind, count, data in rows:
            field = struct.pack(">I", long_values[(name, tag)]) if len(data) > 4 else data.ljust(4, b"\0")
            out += struct.pack(">HHI", tag, kind, count) + field
        out += struct.pack(">I", offsets["ifd1"] if name == "ifd0" else 0)
    return b"Exif\0\0" + out + blob + thumbnail


@pytest.fixture()
def camera_jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "camera.jpg"
    pixels = np.zeros((30, 50, 3), np.uint8)
    pixels[:, :25] = 255
    Image.fromarray(pixels).save(path, quality=95, exif=camera_exif(), xmp=XMP)
    raw = path.read_bytes()
    assert THUMB_MARK in raw and b"BODY-SERIAL-123" in raw and b"MAKERNOTE-SECRET" in raw  # a real camera block
    return path


def _written(camera_jpeg: Path, tmp_path: Path, policy: str) -> tuple[bytes, Image.Exif, dict]:
    photo = load_photo(camera_jpeg)
    assert photo.pixels.shape == (50, 30, 3)  # orientation 6 applied to the pixels
    out = save_photo(photo, photo.pixels, tmp_path / policy / "camera.jpg", WriteOptions(metadata=policy))
    with Image.open(out) as image:
        return out.read_bytes(), image.getexif(), dict(image.info)


def test_keep_safe_keeps_date_camera_and_copyright_only(camera_jpeg: Path, tmp_path: Path) -> None:
    raw, exif, info = _written(camera_jpeg, tmp_path, "keep-safe")
    assert (exif[0x010F], exif[0x0110], exif[0x8298], exif[0x0132]) == ("Canon", "EOS 5D", "(c) Jane Doe",
                                                                        "2024:05:01 10:00:00")
    assert exif.get_ifd(ExifTags.IFD.Exif) == {0x9003: "2024:05:01 09:59:58"}
    assert exif[0x0112] == 1  # the pixels are upright
    assert not exif.get_ifd(ExifTags.IFD.GPSInfo) and 0x013B not in exif and 0x0131 not in exif
    for secret in (b"BODY-SERIAL", b"LENS-SERIAL", b"MAKERNOTE-SECRET", THUMB_MARK, b"Artist Person", b"GPSLatitude"):
        assert secret not in raw, secret
    assert "xmp" not in info


def test_strip_writes_no_exif_and_no_xmp(camera_jpeg: Path, tmp_path: Path) -> None:
    raw, exif, info = _written(camera_jpeg, tmp_path, "strip")
    assert len(exif) == 0 and b"Canon" not in raw and "xmp" not in info and THUMB_MARK not in raw


def test_keep_keeps_everything_but_the_rotation_and_the_thumbnail(camera_jpeg: Path, tmp_path: Path) -> None:
    raw, exif, info = _written(camera_jpeg, tmp_path, "keep")
    assert exif[0x013B] == "Artist Person" and exif.get_ifd(ExifTags.IFD.Exif)[0xA431] == "BODY-SERIAL-123"
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[1] == "N" and b"MAKERNOTE-SECRET" in raw
    assert exif[0x0112] == 1 and THUMB_MARK not in raw
    assert b'tiff:Orientation="1"' in info["xmp"] and b"GPSLatitude" in info["xmp"]


@pytest.mark.parametrize("image_format", ["PNG", "WEBP", "TIFF"])
def test_keep_safe_in_the_other_formats(camera_jpeg: Path, tmp_path: Path, image_format: str) -> None:
    photo = load_photo(camera_jpeg)
    out = save_photo(photo, photo.pixels, tmp_path / f"camera.{image_format.lower()}", image_format=image_format)
    with Image.open(out) as image:
        exif = image.getexif()
        assert exif[0x0110] == "EOS 5D" and not exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert b"BODY-SERIAL" not in out.read_bytes()


def test_no_exif_in_gives_none_out() -> None:
    assert output_exif(Image.Exif(), "keep") is None and output_exif(None, "keep-safe") is None


def test_keep_writes_an_interop_ifd(tmp_path: Path) -> None:
    """Most cameras write an Interop IFD inside the Exif IFD; --metadata keep crashed the write on it (Pillow's new
    Exif followed the Interop pointer into a file it does not have)."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif.get_ifd(ExifTags.IFD.Exif).update({0x9003: "2024:05:01 09:59:58", ExifTags.IFD.Interop: {1: "R98"}})
    source = tmp_path / "camera.jpg"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(source, exif=exif.tobytes())
    photo = load_photo(source)
    out = save_photo(photo, photo.pixels, tmp_path / "out.jpg", WriteOptions(metadata="keep"))
    with Image.open(out) as written:
        kept = written.getexif()
        assert kept.get_ifd(ExifTags.IFD.Interop) == {1: "R98"} and kept[0x010F] == "Canon"
        assert kept.get_ifd(ExifTags.IFD.Exif)[0x9003] == "2024:05:01 09:59:58"
