"""Real codecs through Pillow: losslessness, error ordering by quality, resize geometry, chains, batches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import features

from comcloak.codecs import Codec, CodecUnavailableError, Jpeg, Resize, parse_codec


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def errors(spec_template: str, values: list[object], image: np.ndarray) -> list[float]:
    return [mae(parse_codec(spec_template.format(v)).apply(image), image) for v in values]


def test_png_is_lossless(photos: list[np.ndarray]) -> None:
    for image in photos:
        np.testing.assert_array_equal(parse_codec("png").apply(image), image)


def test_none_returns_an_equal_copy(photo: np.ndarray) -> None:
    out = parse_codec("none").apply(photo)
    np.testing.assert_array_equal(out, photo)
    assert out is not photo and not np.shares_memory(out, photo)


@pytest.mark.parametrize(
    "spec", ["none", "png", "jpeg:50", "jpeg:50:444", "webp:50", "jp2:10", "resize:64", "resize:64+jpeg:80"]
)
def test_output_is_fresh_uint8_rgb_and_input_untouched(photo: np.ndarray, spec: str) -> None:
    before = photo.copy()
    out = parse_codec(spec).apply(photo)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.flags.writeable and not np.shares_memory(out, photo)
    np.testing.assert_array_equal(photo, before)


def test_jpeg_error_falls_as_quality_rises(photos: list[np.ndarray]) -> None:
    for image in photos:
        err = errors("jpeg:{}", [25, 50, 75, 95], image)
        assert err == sorted(err, reverse=True) and len(set(err)) == 4, err


def test_jpeg_subsampling_modes_differ_and_444_is_closest(photo: np.ndarray) -> None:
    outs = {sub: parse_codec(f"jpeg:75:{sub}").apply(photo) for sub in ("444", "422", "420")}
    assert not np.array_equal(outs["444"], outs["420"]) and not np.array_equal(outs["422"], outs["420"])
    assert mae(outs["444"], photo) < mae(outs["420"], photo)
    # 4:2:0 is the default, as in Pillow.
    np.testing.assert_array_equal(parse_codec("jpeg:75").apply(photo), outs["420"])


def test_jpeg2000_error_rises_with_ratio(photos: list[np.ndarray]) -> None:
    for image in photos:
        err = errors("jp2:{}", [10, 20, 40], image)
        assert err == sorted(err) and len(set(err)) == 3, err


def test_webp_error_falls_as_quality_rises(photos: list[np.ndarray]) -> None:
    for image in photos:
        err = errors("webp:{}", [25, 50, 75, 95], image)
        assert err == sorted(err, reverse=True) and len(set(err)) == 4, err


def test_avif_runs_or_says_it_is_unavailable(photo: np.ndarray) -> None:
    low, high = parse_codec("avif:25"), parse_codec("avif:90")  # parsing never depends on the build
    if not features.check("avif"):
        with pytest.raises(CodecUnavailableError, match="no AVIF support"):
            low.apply(photo)
        return
    assert mae(low.apply(photo), photo) > mae(high.apply(photo), photo)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (17, 33)])
@pytest.mark.parametrize("spec", ["png", "jpeg:50", "jpeg:50:422", "webp:50", "jp2:10"])
def test_tiny_and_odd_sizes_keep_their_shape(shape: tuple[int, int], spec: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert parse_codec(spec).apply(image).shape == image.shape


@pytest.mark.parametrize(("shape", "longest", "expected"), [
    ((106, 160), 64, (42, 64)),  # landscape: 106 * 64 / 160 = 42.4
    ((160, 106), 80, (80, 53)),  # portrait
    ((100, 100), 99, (99, 99)),
    ((3, 400), 100, (1, 100)),  # a thin strip keeps at least one pixel
    ((106, 160), 160, (106, 160)),  # already that size: untouched
    ((106, 160), 4096, (106, 160)),  # never upscales
])  # fmt: skip
def test_resize_keeps_aspect_and_sets_longest_side(
    shape: tuple[int, int], longest: int, expected: tuple[int, int]
) -> None:
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    codec = Resize(longest)
    out = codec.apply(image)
    assert out.shape == (*expected, 3)
    assert codec.output_size(*shape) == expected
    if expected == shape:
        np.testing.assert_array_equal(out, image)


def test_resize_antialiases(photo: np.ndarray) -> None:
    # A one-pixel checkerboard averages to flat grey under Lanczos; naive decimation would keep it black or white.
    board = (np.indices((64, 96)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = Resize(32).apply(np.repeat(board[:, :, None], 3, axis=2))
    assert out.shape == (21, 32, 3)
    assert abs(float(out[4:-4, 4:-4].mean()) - 127.5) < 3 and float(out[4:-4, 4:-4].std()) < 3


def test_chain_applies_left_to_right(photo: np.ndarray) -> None:
    chain = parse_codec("resize:64+jpeg:50")
    assert chain.spec == "resize:64+jpeg:50" and not chain.preserves_size
    expected = Jpeg(50).apply(Resize(64).apply(photo))
    np.testing.assert_array_equal(chain.apply(photo), expected)
    # The other order is a different pipeline with a different result.
    np.testing.assert_array_equal(
        parse_codec("jpeg:50+resize:64").apply(photo), Resize(64).apply(Jpeg(50).apply(photo))
    )
    assert not np.array_equal(parse_codec("jpeg:50+resize:64").apply(photo), expected)


@pytest.mark.parametrize("spec", ["none", "png", "jpeg:60", "webp:60", "jp2:20", "resize:50+jpeg:85"])
def test_batch_apply_equals_per_image_apply(photos: list[np.ndarray], spec: str) -> None:
    codec = parse_codec(spec)
    height = min(p.shape[0] for p in photos)
    batch = np.stack([p[:height] for p in photos])
    out = codec.apply_batch(batch)
    assert out.dtype == np.uint8 and out.shape == (len(photos), *codec.output_size(*batch.shape[1:3]), 3)
    for got, image in zip(out, batch):
        np.testing.assert_array_equal(got, codec.apply(image))
    empty = codec.apply_batch(batch[:0])
    assert empty.shape == (0, *codec.output_size(*batch.shape[1:3]), 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8, 3), dtype=np.float32),
        np.zeros((8, 8), dtype=np.uint8),
        np.zeros((8, 8, 4), dtype=np.uint8),
        np.zeros((0, 8, 3), dtype=np.uint8),
        [[0, 0, 0]],
    ],
)
def test_apply_rejects_non_rgb_uint8(bad: object) -> None:
    for codec in (parse_codec("jpeg:50"), parse_codec("none"), parse_codec("resize:4+png")):
        with pytest.raises(ValueError, match="HxWx3 uint8|numpy array"):
            codec.apply(bad)  # type: ignore[arg-type]


def test_apply_batch_rejects_single_image(photo: np.ndarray) -> None:
    with pytest.raises(ValueError, match="NxHxWx3"):
        parse_codec("jpeg:50").apply_batch(photo)


def test_codecs_are_codec_instances() -> None:
    for spec in ("none", "png", "jpeg:1", "webp:0", "jp2:1.5", "avif:0", "resize:1", "png+none"):
        assert isinstance(parse_codec(spec), Codec)
