"""Reading and writing photos: formats, orientation, alpha, atomic writes, bad files."""

from __future__ import annotations

from pathlib import Path

import hostile_files
import numpy as np
import pytest
from PIL import Image

from comcloak.codecs.photos import PhotoError, collect_inputs, collect_photos, load_photo, read_header, save_photo


@pytest.fixture()
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


@pytest.mark.parametrize(("suffix", "lossless"), [(".png", True), (".tif", True), (".bmp", True),
                                                  (".jpg", False), (".webp", False)])
def test_round_trip_keeps_size_and_format(tmp_path: Path, pixels: np.ndarray, suffix: str, lossless: bool) -> None:
    source = tmp_path / f"in{suffix}"
    Image.fromarray(pixels).save(source)
    photo = load_photo(source)
    destination = save_photo(photo, photo.pixels, tmp_path / "out" / f"in{suffix}")
    with Image.open(destination) as written:
        assert written.format == photo.format and written.size == (60, 40)
    again = load_photo(destination).pixels
    if lossless:
        np.testing.assert_array_equal(again, photo.pixels)
    assert not list((tmp_path / "out").glob("*.part"))


def test_exif_orientation_is_applied(tmp_path: Path, pixels: np.ndarray) -> None:
    source = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.fromarray(pixels).save(source, exif=exif)
    assert load_photo(source).pixels.shape == (60, 40, 3)


def test_alpha_survives(tmp_path: Path, pixels: np.ndarray) -> None:
    alpha = np.full((40, 60), 128, np.uint8)
    source = tmp_path / "alpha.png"
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(source)
    photo = load_photo(source)
    save_photo(photo, photo.pixels, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode == "RGBA" and np.asarray(written)[..., 3].tolist() == alpha.tolist()


def test_a_webp_keeps_the_colour_under_its_transparent_pixels(tmp_path: Path) -> None:
    """libwebp replaces the colour of fully transparent pixels unless told to keep it: the written photo must be the
    input's pixels everywhere (the zoo check found transparent.webp's means moved by 7 levels, L-inf 169)."""
    rgb = np.dstack([hostile_files.gradient(64, 64).astype(np.uint8)] * 3)
    alpha = np.zeros((64, 64), np.uint8)
    alpha[:, :32] = 255  # the right half invisible, its colour still the gradient
    source = tmp_path / "half.webp"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(source, lossless=True, exact=True)
    photo = load_photo(source)
    save_photo(photo, photo.pixels, tmp_path / "out.webp")
    written = load_photo(tmp_path / "out.webp")
    np.testing.assert_array_equal(written.alpha, alpha)
    assert np.abs(written.pixels[:, 32:].astype(int) - rgb[:, 32:]).mean() < 3  # lossy WebP, the colour kept


@pytest.mark.parametrize(("content", "message"), [(b"not an image", "not a readable image"),
                                                  (None, "no such file")])
def test_bad_files_raise_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PhotoError, match=message) as info:
        load_photo(path)
    assert "\n" not in str(info.value)


def test_truncated_jpeg_is_reported(tmp_path: Path, pixels: np.ndarray) -> None:
    path = tmp_path / "cut.jpg"
    Image.fromarray(pixels).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PhotoError, match="cut.jpg"):
        load_photo(path)


def test_failed_write_leaves_nothing(tmp_path: Path, pixels: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(pixels).save(source)
    photo = load_photo(source)

    def broken_save(self, fp, format=None, **params):  # noqa: A002 - Pillow's parameter name
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    (tmp_path / "out").mkdir()
    with pytest.raises(OSError, match="disk full"):
        save_photo(photo, photo.pixels, tmp_path / "out" / "in.png")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_write_that_fails_midway_leaves_nothing(tmp_path: Path, pixels: np.ndarray,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import comcloak.codecs.photos as photos

    source = tmp_path / "in.png"
    Image.fromarray(pixels).save(source)
    photo = load_photo(source)
    real_writer = photos.atomic_writer

    def failing_writer(destination):
        class Handle:
            def __init__(self, inner):
                self.inner = inner

            def write(self, data):
                self.inner.write(data[: len(data) // 2])
                raise OSError("disk full")

        from contextlib import contextmanager

        @contextmanager
        def wrapped():
            with real_writer(destination) as inner:
                yield Handle(inner)

        return wrapped()

    monkeypatch.setattr(photos, "atomic_writer", failing_writer)
    with pytest.raises(OSError, match="disk full"):
        save_photo(photo, photo.pixels, tmp_path / "out" / "in.png")
    assert list((tmp_path / "out").iterdir()) == []


def test_collect_photos_walks_folders(tmp_path: Path, pixels: np.ndarray) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.jpg", "a/b/y.png", "a/notes.txt"):
        target = tmp_path / name
        if name.endswith(".txt"):
            target.write_text("hi")
        else:
            Image.fromarray(pixels).save(target)
    pairs = collect_photos([tmp_path / "a"])
    assert [str(relative) for _, relative in pairs] == ["b/y.png", "x.jpg"]
    with pytest.raises(PhotoError, match="input not found"):
        collect_photos([tmp_path / "missing"])


def test_collect_inputs_says_what_it_skipped_and_why(tmp_path: Path, pixels: np.ndarray) -> None:
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(pixels).save(top / "real.jpg")
    Image.fromarray(pixels).save(outside / "far.png")
    (top / "notes.txt").write_text("hi")
    (top / "link-to-real.jpg").symlink_to(top / "real.jpg")  # a second path to real.jpg
    (top / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (top / "linked-folder").symlink_to(outside, target_is_directory=True)
    (top / "sub" / "loop").symlink_to(top, target_is_directory=True)
    collected = collect_inputs([top])
    assert [str(relative) for _, relative in collected.pairs] == ["real.jpg"]
    reasons = {str(item.path.relative_to(top)): item.reason for item in collected.skipped}
    assert reasons["notes.txt"] == "not a photo (.txt)"
    assert reasons["gone.jpg"] == "dangling symlink"
    assert reasons["link-to-real.jpg"].startswith("the same photo as") and "real.jpg" in reasons["link-to-real.jpg"]
    assert "use --follow-symlinks" in reasons["linked-folder"] and "use --follow-symlinks" in reasons["sub/loop"]
    followed = collect_inputs([top], follow_symlinks=True)
    assert [str(relative) for _, relative in followed.pairs] == ["linked-folder/far.png", "real.jpg"]
    assert "loops back" in {str(i.path.relative_to(top)): i.reason for i in followed.skipped}["sub/loop"]


@pytest.mark.parametrize(("suffix", "image_format"), [(".gif", "GIF"), (".avif", "AVIF"), (".heic", "HEIF")])
def test_gif_avif_and_heic_inputs_are_read(tmp_path: Path, pixels: np.ndarray, suffix: str,
                                           image_format: str) -> None:
    if image_format == "HEIF":
        pytest.importorskip("pillow_heif").register_heif_opener()
    source = tmp_path / f"photo{suffix}"
    Image.fromarray(pixels).save(source, format=image_format)
    photo = load_photo(source)
    assert photo.format == image_format and photo.pixels.shape == (40, 60, 3)
    assert [str(relative) for _, relative in collect_photos([tmp_path])] == [f"photo{suffix}"]


def test_animated_images_are_refused_not_flattened(tmp_path: Path, pixels: np.ndarray) -> None:
    source = tmp_path / "anim.gif"
    frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
    frames[0].save(source, save_all=True, append_images=frames[1:])
    with pytest.raises(PhotoError, match=r"animated image \(2 frames\): not supported"):
        load_photo(source)


@pytest.mark.parametrize(("build", "name", "reason"), [
    (hostile_files.animated_gif, "anim.gif",
     "animated image (2 frames): not supported, only single still images are cloaked"),
    (hostile_files.multipage_tiff, "pages.tif",
     "multi-page TIFF (3 pages): not supported, only single still images are cloaked"),
])
def test_animated_and_multi_page_files_say_what_they_are(tmp_path: Path, build, name: str, reason: str) -> None:
    path = build(tmp_path / name)
    with pytest.raises(PhotoError) as raised:
        load_photo(path)
    assert raised.value.reason == reason  # not "corrupt image (PATH: ...)"
    assert str(raised.value).count(str(path)) == 1


def test_a_multi_picture_jpeg_is_its_first_picture_with_a_note(tmp_path: Path) -> None:
    path = hostile_files.multi_picture_jpeg(tmp_path / "stereo.jpg")
    photo = load_photo(path)
    assert photo.format == "JPEG" and read_header(path).format == "JPEG"
    assert photo.notes[0].startswith("multi-picture JPEG (2 images): the first is cloaked")
    with Image.open(path) as image:
        np.testing.assert_array_equal(photo.pixels, np.asarray(image.convert("RGB")))


def test_one_loader_one_extension_list_one_error_for_the_whole_project() -> None:
    import subprocess
    import sys

    from comcloak.codecs import pairs, photos

    assert pairs.load_rgb is photos.load_rgb and pairs.PHOTO_EXTENSIONS is photos.PHOTO_EXTENSIONS
    assert pairs.PhotoError is photos.PhotoError
    code = "import sys, comcloak.codecs.photos; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_photo_errors_name_the_file_and_the_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PhotoError) as raised:
        load_photo(tmp_path / "bad.jpg")
    assert raised.value.path == tmp_path / "bad.jpg" and raised.value.reason == "not a readable image"
    assert str(raised.value) == f"{tmp_path / 'bad.jpg'}: not a readable image"


def test_large_image_warning_becomes_a_note_not_a_printout(tmp_path: Path, pixels: np.ndarray,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    source = tmp_path / "big.png"
    Image.fromarray(pixels).save(source)  # 2400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # warning above 2000, error above 4000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping would fail here
        photo = load_photo(source)
    assert any("decompression-bomb warning size" in note for note in photo.notes)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the guard itself stays on
    with pytest.raises(PhotoError, match="decompression bomb"):
        load_photo(source)


def test_uploads_decode_from_bytes_and_encode_to_bytes(tmp_path: Path, pixels: np.ndarray) -> None:
    from comcloak.codecs.photos import encode_photo

    source = tmp_path / "in.png"
    Image.fromarray(pixels).save(source)
    photo = load_photo("upload", data=source.read_bytes())
    np.testing.assert_array_equal(photo.pixels, load_photo(source).pixels)
    assert encode_photo(photo, photo.pixels) == save_photo(photo, photo.pixels, tmp_path / "out.png").read_bytes()
    with pytest.raises(PhotoError, match="^upload: not a readable image"):
        load_photo("upload", data=b"not an image")
