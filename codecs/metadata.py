"""What a cloaked file says about its photo: the ``--metadata`` policy for EXIF and XMP. Torch-free, Pillow only.

- ``strip``: no EXIF, no XMP.
- ``keep-safe`` (the default): only the capture date and time (with its offset and sub-seconds), the camera make and
  model, and the copyright; GPS, serial numbers, MakerNote, owner and software fields, XMP and everything else are
  dropped.
- ``keep``: every EXIF tag and the XMP packet, as they came.

In every policy: the orientation is 1 (the pixels are written upright, so a kept rotation would turn them twice; an
XMP ``tiff:Orientation`` is rewritten too), the EXIF thumbnail is never written (it would show the uncloaked photo),
and the ICC colour profile is handled apart (``comcloak.codecs.pixel_formats``: kept when valid for the output) since
it says how to show the pixels, not who took them.
"""

from __future__ import annotations

import re

from PIL import ExifTags, Image

METADATA_POLICIES = ("strip", "keep-safe", "keep")
DEFAULT_METADATA = "keep-safe"

ORIENTATION = 0x0112
UPRIGHT = 1
# keep-safe's allowlist: IFD0 tags, then tags of the Exif sub-IFD.
SAFE_IFD0_TAGS = frozenset({
    0x010F,  # Make
    0x0110,  # Model
    0x0132,  # DateTime
    0x8298,  # Copyright
})
SAFE_EXIF_TAGS = frozenset({
    0x9003,  # DateTimeOriginal
    0x9004,  # DateTimeDigitized
    0x9010,  # OffsetTime
    0x9011,  # OffsetTimeOriginal
    0x9012,  # OffsetTimeDigitized
    0x9290,  # SubSecTime
    0x9291,  # SubSecTimeOriginal
    0x9292,  # SubSecTimeDigitized
})
_SUB_IFDS = (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop)
_POINTED_IFDS = (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo)  # pointed to from IFD0; Interop from the Exif IFD
_XMP_ORIENTATION = re.compile(rb"(tiff:Orientation\s*=\s*[\"']|<tiff:Orientation>)\s*\d+")


def check_policy(policy: str) -> str:
    if policy not in METADATA_POLICIES:
        raise ValueError(f"metadata policy must be one of {', '.join(METADATA_POLICIES)}, got {policy!r}")
    return policy


def output_exif(exif: Image.Exif | None, policy: str = DEFAULT_METADATA) -> Image.Exif | None:
    """The EXIF to write with a cloak of a photo whose EXIF is ``exif``, by ``policy``; None for none.

    Example:
        >>> source = Image.Exif()
        >>> source[0x010F] = "Canon"; source[0x0131] = "Editor 1.0"; source[ORIENTATION] = 6
        >>> sorted(output_exif(source, "keep-safe").items())
        [(271, 'Canon'), (274, 1)]
    """
    check_policy(policy)
    if policy == "strip" or exif is None or not len(exif) and not any(exif.get_ifd(ifd) for ifd in _POINTED_IFDS):
        return None
    result = Image.Exif()
    if policy == "keep":
        for tag, value in exif.items():
            if tag not in _SUB_IFDS:
                result[tag] = value
        for ifd in _POINTED_IFDS:
            values = dict(exif.get_ifd(ifd))
            if ifd == ExifTags.IFD.Exif and not isinstance(values.get(ExifTags.IFD.Interop, {}), dict):
                # nested as a dict: a new Exif has no file to follow the Interop pointer into
                values[ExifTags.IFD.Interop] = dict(exif.get_ifd(ExifTags.IFD.Interop))
            if values:
                result.get_ifd(ifd).update(values)
    else:
        for tag in SAFE_IFD0_TAGS & set(exif):
            result[tag] = exif[tag]
        safe = {tag: value for tag, value in exif.get_ifd(ExifTags.IFD.Exif).items() if tag in SAFE_EXIF_TAGS}
        if safe:
            result.get_ifd(ExifTags.IFD.Exif).update(safe)
    result[ORIENTATION] = UPRIGHT
    return result


def output_xmp(xmp: bytes | None, policy: str = DEFAULT_METADATA) -> bytes | None:
    """The XMP packet to write: kept (orientation rewritten to 1) only under ``keep``."""
    check_policy(policy)
    if policy != "keep" or not xmp:
        return None
    return _XMP_ORIENTATION.sub(lambda match: match.group(1) + str(UPRIGHT).encode(), xmp)
