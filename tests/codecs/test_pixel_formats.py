"""Every pixel format is cloaked correctly or refused with a reason (issue 14): real files of each kind, decoded with
load_photo and written back with save_photo."""

from __future__ import annotations

from pathlib import Path

import hostile_files
import numpy as np
import pytest
import tifffile
from icc_profiles import RED_FOR_CYAN, cmyk_test_profile, grey_profile
from PIL import Image

from comcloak.codecs.photos import PhotoError, load_photo, save_photo
from comcloak.codecs.pixel_formats import icc_colour_space

RAMP = np.linspace(0, 1, 48 * 64).reshape(48, 64)  # a greyscale ramp, black to white


def _expected_grey(fraction: np.ndarray) -> np.ndarray:
    return np.repeat(np.rint(fraction * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    source = tmp_path / "grey16.png"
    Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16)).save(source)
    photo = load_photo(source)
    assert photo.greyscale and "16-bit samples scaled to 8 bits" in photo.notes
    np.testing.assert_allclose(photo.pixels.astype(int), _expected_grey(RAMP).astype(int), atol=1)
    assert 100 < photo.pixels.mean() < 155  # was all white: Pillow's convert clips 16-bit samples at 255


@pytest.mark.parametrize(("samples", "fraction"), [
    (np.rint(RAMP * 1_000_000).astype(np.int32), RAMP),  # 32-bit integer: its real range
    (RAMP.astype(np.float32), RAMP),  # float in [0, 1]
    ((RAMP * 4000 - 0).astype(np.float32), RAMP),  # float beyond [0, 1]: its real range
    ((RAMP * 200 - 100).astype(np.float32), RAMP),  # negative floats: lowest to highest
    (np.rint(RAMP * 60000).astype(np.uint32), RAMP),  # unsigned 32-bit
    (np.rint(RAMP * 254 - 127).astype(np.int8), RAMP),  # signed 8-bit (Pillow reads it as unsigned)
])
def test_integer_and_float_tiff_are_scaled_by_their_range(tmp_path: Path, samples: np.ndarray,
                                                          fraction: np.ndarray) -> None:
    source = tmp_path / "samples.tif"
    tifffile.imwrite(source, samples)
    photo = load_photo(source)
    assert photo.greyscale
    np.testing.assert_allclose(photo.pixels.astype(int), _expected_grey(fraction).astype(int), atol=2)


def test_non_finite_samples_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "nan.tif"
    samples = RAMP.astype(np.float32)
    samples[3, 3] = np.nan
    tifffile.imwrite(source, samples)
    with pytest.raises(PhotoError, match="NaN or infinite"):
        load_photo(source)


def test_float_rgb_tiff_is_refused_with_a_reason(tmp_path: Path) -> None:
    source = tmp_path / "rgbf.tif"
    tifffile.imwrite(source, np.stack([RAMP] * 3, axis=2).astype(np.float32), photometric="rgb")
    with pytest.raises(PhotoError, match="not a readable image"):
        load_photo(source)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif", ".bmp"])
def test_greyscale_stays_greyscale_with_its_grey_profile(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / f"grey{suffix}"
    Image.fromarray(np.rint(RAMP * 255).astype(np.uint8), "L").save(source, icc_profile=grey_profile())
    photo = load_photo(source)
    carries_profiles = suffix != ".bmp"  # BMP has no colour profile
    assert photo.greyscale and (icc_colour_space(photo.icc_profile) == "GRAY") == carries_profiles
    cloak = photo.pixels.copy()
    cloak[..., 0] = np.clip(cloak[..., 0].astype(int) + 3, 0, 255)  # a colour cloak: written as its luminance
    written = save_photo(photo, cloak, tmp_path / "out" / source.name)
    with Image.open(written) as image:
        assert image.mode == "L" and (icc_colour_space(image.info.get("icc_profile")) == "GRAY") == carries_profiles


def test_greyscale_webp_is_written_as_rgb_without_the_grey_profile(tmp_path: Path) -> None:
    source = tmp_path / "grey.png"
    Image.fromarray(np.rint(RAMP * 255).astype(np.uint8), "L").save(source, icc_profile=grey_profile())
    photo = load_photo(source)
    written = save_photo(photo, photo.pixels, tmp_path / "grey.webp", image_format="WEBP")
    with Image.open(written) as image:
        assert image.mode == "RGB" and image.info.get("icc_profile") is None


def test_cmyk_jpeg_is_converted_through_its_profile_and_written_as_srgb(tmp_path: Path) -> None:
    source = tmp_path / "cmyk.jpg"
    cmyk = np.zeros((32, 32, 4), np.uint8)
    cmyk[:, :16, 0] = 255  # left half pure cyan, right half paper white
    Image.fromarray(cmyk, "CMYK").save(source, quality=100, icc_profile=cmyk_test_profile())
    photo = load_photo(source)
    assert not photo.greyscale and "CMYK converted to sRGB through its ICC profile" in photo.notes
    left = photo.pixels[:, :8].reshape(-1, 3).mean(axis=0)
    assert left[0] > 150 and left[1] < 110 and left[2] < 110, left  # the profile's red, not naive cyan
    assert RED_FOR_CYAN[1] > 0
    assert photo.pixels[:, 24:].min() > 240  # white stays white
    assert icc_colour_space(photo.icc_profile) == "RGB"
    written = save_photo(photo, photo.pixels, tmp_path / "out" / "cmyk.jpg")
    with Image.open(written) as image:
        assert image.mode == "RGB" and icc_colour_space(image.info.get("icc_profile")) == "RGB"


def test_cmyk_without_a_usable_profile_never_carries_it_onto_rgb(tmp_path: Path) -> None:
    source = tmp_path / "cmyk.jpg"
    broken = bytearray(cmyk_test_profile())
    broken[128:] = bytes(len(broken) - 128)  # a CMYK header with no readable tags
    Image.fromarray(np.full((16, 16, 4), 40, np.uint8), "CMYK").save(source, icc_profile=bytes(broken))
    photo = load_photo(source)
    assert photo.icc_profile is None and any("converted without it" in note for note in photo.notes)
    written = save_photo(photo, photo.pixels, tmp_path / "out" / "cmyk.jpg")
    with Image.open(written) as image:
        assert image.mode == "RGB" and image.info.get("icc_profile") is None


def test_rgb_profile_is_kept(tmp_path: Path) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(source, icc_profile=srgb)
    photo = load_photo(source)
    written = save_photo(photo, photo.pixels, tmp_path / "out" / "rgb.png")
    with Image.open(written) as image:
        assert image.info.get("icc_profile") == srgb


@pytest.mark.parametrize("mode", ["1", "P", "LA", "RGBA"])
def test_other_modes_decode_to_rgb_with_alpha_apart(tmp_path: Path, mode: str) -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 128
    image = Image.fromarray(rgba, "RGBA")
    converted = image.convert(mode)
    source = tmp_path / f"{mode}.png"
    converted.save(source)
    photo = load_photo(source)
    assert photo.pixels.shape == (16, 16, 3) and photo.pixels.dtype == np.uint8
    assert photo.greyscale == (mode in ("1", "LA"))
    assert (photo.alpha is not None) == (mode in ("LA", "RGBA", "P"))  # the palette keeps a transparent entry


@pytest.mark.parametrize(("mode", "written_mode"), [("L", "LA"), ("RGB", "RGBA")])
def test_a_transparent_colour_is_kept_as_alpha(tmp_path: Path, mode: str, written_mode: str) -> None:
    path, alpha = hostile_files.trns_png(tmp_path / "trns.png", mode)
    photo = load_photo(path)
    assert photo.alpha is not None and (photo.alpha == 0).sum() >= 256
    np.testing.assert_array_equal(photo.alpha, alpha)
    out = save_photo(photo, photo.pixels, tmp_path / "out.png")
    with Image.open(out) as written:
        assert written.mode == written_mode
        np.testing.assert_array_equal(np.asarray(written)[..., -1], alpha)


def test_a_12_bit_tiff_is_scaled_by_its_declared_depth(tmp_path: Path) -> None:
    samples = hostile_files.gradient(high=4095)
    photo = load_photo(hostile_files.twelve_bit_tiff(tmp_path / "scan.tif", samples))
    np.testing.assert_array_equal(photo.pixels[..., 0], np.rint(samples * (255 / 4095)).astype(np.uint8))
    assert photo.notes == ("12-bit samples scaled to 8 bits",) and photo.greyscale


@pytest.mark.parametrize(("build", "low", "high", "bits"), [
    (hostile_files.sixteen_bit_tiff, 291, 694, 16),  # as Pillow's 16bit.cropped.tif: 2 levels at 8 bits
    (hostile_files.twelve_bit_tiff, 0, 30, 12),  # as Pillow's 12bit.cropped.tif
])
def test_a_nearly_black_deep_photo_is_scaled_by_its_range(tmp_path: Path, build, low: int, high: int,
                                                          bits: int) -> None:
    samples = hostile_files.gradient(low=low, high=high)
    photo = load_photo(build(tmp_path / "dark.tif", samples))
    grey = photo.pixels[..., 0].astype(int)
    np.testing.assert_array_equal(grey, np.rint(samples * (255 / high)))  # from 0 (black stays black) to the top
    levels = round(high * 255 / (2**bits - 1)) - round(low * 255 / (2**bits - 1))
    assert photo.notes == (f"{bits}-bit samples span only {low}..{high} of 0..{2**bits - 1} ({levels} levels at 8 "
                           "bits)", f"scaled from their range 0..{high} to 8 bits")


def test_a_flat_deep_photo_is_not_stretched(tmp_path: Path) -> None:
    samples = hostile_files.gradient(low=30000, high=30010)  # 10 levels of 65535: nothing to reveal
    photo = load_photo(hostile_files.sixteen_bit_tiff(tmp_path / "flat.tif", samples))
    assert photo.notes == ("16-bit samples scaled to 8 bits",) and set(np.unique(photo.pixels)) == {117}
