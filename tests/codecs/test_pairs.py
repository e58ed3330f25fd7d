"""ComModel training pairs: simulated (photos + real codec) and real platform pairs, from real files on disk."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from comcloak.codecs import Codec, parse_codec
from comcloak.codecs.pairs import (
    PairDataError,
    PairProblem,
    PairSet,
    PhotoError,
    PlatformPairs,
    SimulatedPairs,
    ViewSettings,
    held_out_views,
    list_photos,
    load_rgb,
    paper_view,
    split_held_out,
    training_crops,
)

SIZE = 32


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _photo(name: str, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return np.array(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)


def _save(pixels: np.ndarray, path: Path, **options: object) -> Path:
    Image.fromarray(pixels).save(path, **options)
    return path


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    """A 200x150 (WxH) photo."""
    return _photo("chelsea", 200, 150)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory, chelsea: np.ndarray) -> Path:
    """Two real photos: chelsea 200x150 PNG and coffee 90x120 JPEG (odd sizes, so grids matter)."""
    folder = tmp_path_factory.mktemp("photos")
    _save(chelsea, folder / "chelsea.png")
    _save(_photo("coffee", 90, 120), folder / "coffee.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def photo_paths(photo_dir: Path) -> list[Path]:
    return list_photos(photo_dir)


# ---------------------------------------------------------------------------------------------------- photos


def test_split_held_out_is_deterministic_disjoint_and_complete() -> None:
    names = [f"photo_{i:03d}.jpg" for i in range(60)]
    paths = [Path("/a") / name for name in reversed(names)]
    train, held_out = split_held_out(paths)
    assert (train, held_out) == split_held_out(list(reversed(paths)))
    assert not {p.name for p in train} & {p.name for p in held_out}
    assert sorted(p.name for p in train + held_out) == names
    assert train == sorted(train, key=lambda p: p.name) and held_out == sorted(held_out, key=lambda p: p.name)
    assert all(hashlib.sha1(p.name.encode()).digest()[0] % 3 == 0 for p in held_out)
    assert 5 < len(held_out) < 35
    # By name alone: another folder gives the same split, and adding photos moves none.
    _, other = split_held_out([Path("/b") / name for name in names])
    assert [p.name for p in other] == [p.name for p in held_out]
    _, more = split_held_out(paths + [Path("/a/new_1.jpg"), Path("/a/new_2.jpg")])
    assert {p.name for p in held_out} <= {p.name for p in more}
    assert split_held_out(paths, fraction_denominator=1)[0] == []
    with pytest.raises(ValueError, match="fraction_denominator"):
        split_held_out(paths, fraction_denominator=0)


def test_list_photos_filters_sorts_and_is_not_recursive(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.webp", "d.tiff", "e.bmp", "notes.txt", "f.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.jpg").write_bytes(b"x")
    assert [p.name for p in list_photos(tmp_path)] == ["a.png", "b.JPG", "c.webp", "d.tiff", "e.bmp", "f.jpeg"]
    with pytest.raises(PairDataError, match="does not exist"):
        list_photos(tmp_path / "missing")
    with pytest.raises(PairDataError, match="not a photo folder"):
        list_photos(tmp_path / "a.png")


def test_load_rgb_applies_exif_orientation_and_drops_alpha(tmp_path: Path, chelsea: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(chelsea).save(path, quality=95, exif=exif.tobytes())
    upright = load_rgb(path)
    assert upright.shape == (200, 150, 3) and upright.dtype == np.uint8
    rgba = np.dstack([chelsea, np.full(chelsea.shape[:2], 128, np.uint8)])
    np.testing.assert_array_equal(load_rgb(_save(rgba, tmp_path / "alpha.png")), chelsea)


def test_load_rgb_errors_are_one_line_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "garbage.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(PhotoError, match="not a readable image") as info:
        load_rgb(tmp_path / "garbage.jpg")
    assert info.value.path == tmp_path / "garbage.jpg" and "\n" not in str(info.value)
    with pytest.raises(PhotoError, match="no such file"):
        load_rgb(tmp_path / "missing.png")
    big = _save(np.zeros((64, 64, 3), np.uint8), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(PhotoError, match="decompression bomb"):
        load_rgb(big)


def test_paper_view_is_the_whole_photo_resized_bicubic(chelsea: np.ndarray) -> None:
    view = paper_view(chelsea, SIZE)
    expected = np.asarray(Image.fromarray(chelsea).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(view, expected)
    assert view.shape == (SIZE, SIZE, 3) and view.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------- simulated


def test_simulated_pairs_shapes_names_and_determinism(photo_paths: list[Path]) -> None:
    pairs = SimulatedPairs(photo_paths, parse_codec("jpeg:25"),
                           ViewSettings(size=SIZE, views_per_photo=5, seed=3)).build()
    assert pairs.originals.shape == pairs.compressed.shape == (10, SIZE, SIZE, 3)
    assert pairs.originals.dtype == pairs.compressed.dtype == np.uint8
    assert pairs.names == ["chelsea.png"] * 5 + ["coffee.jpg"] * 5
    assert pairs.problems == [] and len(pairs) == 10 and pairs.size == SIZE
    again = SimulatedPairs(photo_paths, "jpeg:25", ViewSettings(size=SIZE, views_per_photo=5, seed=3)).build()
    np.testing.assert_array_equal(again.originals, pairs.originals)
    np.testing.assert_array_equal(again.compressed, pairs.compressed)
    other = SimulatedPairs(photo_paths, "jpeg:25", ViewSettings(size=SIZE, views_per_photo=5, seed=4)).build()
    assert not np.array_equal(other.originals, pairs.originals)
    # Views are crops, not all the same one.
    assert len({view.tobytes() for view in pairs.originals}) == 10


@pytest.mark.parametrize("spec", ["jpeg:25", "webp:50", "jpeg:50:444", "none"])
def test_pure_codec_runs_on_the_stored_view_itself(photo_paths: list[Path], spec: str) -> None:
    """Grid alignment and flip-before-compression: compressed[i] is exactly codec(originals[i])."""
    codec = parse_codec(spec)
    pairs = SimulatedPairs(photo_paths, codec, ViewSettings(size=SIZE, views_per_photo=6, seed=1)).build()
    for original, compressed in zip(pairs.originals, pairs.compressed):
        np.testing.assert_array_equal(compressed, codec.apply(original))
    if spec == "none":
        np.testing.assert_array_equal(pairs.compressed, pairs.originals)
    else:
        assert mae(pairs.compressed, pairs.originals) > 0.5


def test_flip_mirrors_the_original_view(chelsea: np.ndarray, photo_paths: list[Path]) -> None:
    # scale (1, 1): every box is the whole photo, so every view is the paper view or its mirror image.
    view = paper_view(chelsea, SIZE)
    chelsea_path = [p for p in photo_paths if p.name == "chelsea.png"]
    flipped = SimulatedPairs(chelsea_path, "jpeg:40",
                             ViewSettings(size=SIZE, views_per_photo=12, scale=(1.0, 1.0))).build()
    mirrored = [np.array_equal(o, view[:, ::-1]) for o in flipped.originals]
    plain = [np.array_equal(o, view) for o in flipped.originals]
    assert all(m or p for m, p in zip(mirrored, plain)) and any(mirrored) and any(plain)
    unflipped = SimulatedPairs(chelsea_path, "jpeg:40",
                               ViewSettings(size=SIZE, views_per_photo=4, scale=(1.0, 1.0), flip=False))
    assert all(np.array_equal(o, view) for o in unflipped.build().originals)


def test_resize_chain_compresses_the_full_photo(chelsea: np.ndarray, photo_dir: Path) -> None:
    codec = parse_codec("resize:64+jpeg:50")
    assert not codec.preserves_size
    pairs = SimulatedPairs([photo_dir / "chelsea.png"], codec,
                           ViewSettings(size=SIZE, views_per_photo=6, seed=2)).build()
    assert pairs.originals.shape == pairs.compressed.shape == (6, SIZE, SIZE, 3)
    assert 0.5 < mae(pairs.compressed, pairs.originals) < 12
    np.testing.assert_array_equal(
        pairs.compressed,
        SimulatedPairs([photo_dir / "chelsea.png"], codec,
                       ViewSettings(size=SIZE, views_per_photo=6, seed=2)).build().compressed,
    )
    # Whole-photo boxes: the compressed view is the codec's full-photo output resized (or its mirror's).
    whole = SimulatedPairs([photo_dir / "chelsea.png"], codec,
                           ViewSettings(size=SIZE, views_per_photo=8, scale=(1.0, 1.0))).build()
    expected = {
        paper_view(codec.apply(chelsea), SIZE).tobytes(),
        paper_view(codec.apply(chelsea[:, ::-1]), SIZE).tobytes(),
    }
    assert {c.tobytes() for c in whole.compressed} == expected


def test_held_out_views_follow_the_paper_protocol(chelsea: np.ndarray, photo_paths: list[Path]) -> None:
    jpeg = parse_codec("jpeg:30")
    pairs = held_out_views(photo_paths, jpeg, size=SIZE)
    assert pairs.names == ["chelsea.png", "coffee.jpg"]
    np.testing.assert_array_equal(pairs.originals[0], paper_view(chelsea, SIZE))
    for original, compressed in zip(pairs.originals, pairs.compressed):
        np.testing.assert_array_equal(compressed, jpeg.apply(original))
    chain = parse_codec("resize:64+jpeg:50")
    resized = held_out_views(photo_paths[:1], chain, size=SIZE)
    np.testing.assert_array_equal(resized.compressed[0], paper_view(chain.apply(chelsea), SIZE))


class _FailsOnLandscape(Codec):
    """A codec that fails on wide full-resolution photos (to exercise per-photo codec failures)."""

    @property
    def spec(self) -> str:
        return "fails-on-landscape"

    preserves_size = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        if image.shape[1] > image.shape[0]:
            raise OSError("encoder gave up")
        return image.copy()


def test_bad_photos_and_codec_failures_become_problems(tmp_path: Path, photo_paths: list[Path]) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 not really")
    pairs = SimulatedPairs([*photo_paths, garbage], "jpeg:50", ViewSettings(size=SIZE, views_per_photo=2)).build()
    assert len(pairs) == 4 and "garbage.jpg" not in pairs.names
    assert [p.path for p in pairs.problems] == [garbage] and isinstance(pairs.problems[0], PairProblem)
    # A photo's views do not depend on whether the photos before it decoded.
    replaced = SimulatedPairs([garbage, photo_paths[1]], "jpeg:50", ViewSettings(size=SIZE, views_per_photo=2)).build()
    assert replaced.names == ["coffee.jpg"] * 2
    np.testing.assert_array_equal(replaced.originals, pairs.originals[2:])

    failing = SimulatedPairs(photo_paths, _FailsOnLandscape(), ViewSettings(size=SIZE, views_per_photo=2)).build()
    assert failing.names == ["coffee.jpg"] * 2
    assert len(failing.problems) == 1 and "encoder gave up" in failing.problems[0].reason


def test_no_usable_photos_is_a_pair_data_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"nope")
    with pytest.raises(PairDataError, match="no usable pairs.*garbage.png"):
        SimulatedPairs([garbage], "jpeg:50", ViewSettings(size=SIZE)).build()
    with pytest.raises(PairDataError, match="no photos"):
        SimulatedPairs([], "jpeg:50", ViewSettings(size=SIZE)).build()
    with pytest.raises(PairDataError, match="no usable pairs"):
        held_out_views([garbage], "jpeg:50", size=SIZE)
    with pytest.raises(ValueError, match="scale"):
        SimulatedPairs([garbage], "jpeg:50", ViewSettings(scale=(0.5, 0.2)))


# ---------------------------------------------------------------------------------------------------- platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, chelsea: np.ndarray) -> tuple[Path, Path]:
    """Originals and a platform's copies: re-encoded, downscaled, cropped, corrupt, missing and orphaned."""
    root = tmp_path_factory.mktemp("platform")
    originals, served = root / "originals", root / "served"
    originals.mkdir()
    served.mkdir()
    coffee = _photo("coffee", 160, 107)
    for stem, pixels in (("a", chelsea), ("b", chelsea), ("c", chelsea), ("e", chelsea), ("g", chelsea), ("r", coffee)):
        _save(pixels, originals / f"{stem}.png")
    _save(chelsea, served / "a.jpg", quality=60)  # same size, new extension
    small = np.array(Image.fromarray(chelsea).resize((100, 75), Image.Resampling.LANCZOS))
    _save(small, served / "b.jpg", quality=60)  # platform downscale
    _save(chelsea[:, :150], served / "e.jpg", quality=60)  # cropped square: aspect changed
    (served / "g.jpg").write_bytes(b"\xff\xd8 corrupt upload")
    _save(chelsea, served / "z.jpg", quality=60)  # no original
    rounded = np.array(
        Image.fromarray(coffee).resize((80, 53), Image.Resampling.LANCZOS)
    )  # 0.9% aspect change, from rounding
    _save(rounded, served / "r.webp", quality=60)
    return originals, served


def test_platform_match_by_stem_across_extensions(platform: tuple[Path, Path]) -> None:
    originals, served = platform
    pairs, problems = PlatformPairs(originals, served, ViewSettings(size=SIZE)).match()
    assert [(o.name, c.name) for o, c in pairs] == [
        ("a.png", "a.jpg"),
        ("b.png", "b.jpg"),
        ("e.png", "e.jpg"),
        ("g.png", "g.jpg"),
        ("r.png", "r.webp"),
    ]
    assert {p.path.name: p.reason for p in problems}.keys() == {"c.png", "z.jpg"}
    assert all("partner" in p.reason for p in problems)


def test_platform_build_skips_bad_pairs_and_absorbs_downscale(platform: tuple[Path, Path], chelsea: np.ndarray) -> None:
    originals, served = platform
    source = PlatformPairs(originals, served, ViewSettings(size=SIZE, views_per_photo=3, seed=5),
                           max_aspect_change=0.005)
    pairs = source.build()
    assert pairs.names == ["a.png"] * 3 + ["b.png"] * 3 + ["r.png"] * 3
    assert pairs.originals.shape == pairs.compressed.shape == (9, SIZE, SIZE, 3)
    reasons = {p.path.name: p.reason for p in pairs.problems}
    assert reasons.keys() == {"c.png", "z.jpg", "e.jpg", "g.jpg"}
    assert "size mismatch beyond repair" in reasons["e.jpg"] and "not a readable image" in reasons["g.jpg"]
    # The same proportional box from each photo: the views line up, differing only by compression (and scale).
    for original, compressed in zip(pairs.originals, pairs.compressed):
        assert 0.1 < mae(original, compressed) < 12
    again = PlatformPairs(originals, served, ViewSettings(size=SIZE, views_per_photo=3, seed=5),
                          max_aspect_change=0.005).build()
    np.testing.assert_array_equal(again.compressed, pairs.compressed)
    # Paper views: both whole photos squashed to size x size.
    whole = source.paper_views()
    assert whole.names == ["a.png", "b.png", "r.png"]
    np.testing.assert_array_equal(whole.originals[0], paper_view(chelsea, SIZE))
    np.testing.assert_array_equal(whole.compressed[1], paper_view(load_rgb(served / "b.jpg"), SIZE))


def test_platform_flip_mirrors_both_views(platform: tuple[Path, Path]) -> None:
    originals, served = platform
    views = ViewSettings(size=SIZE, views_per_photo=8, scale=(1.0, 1.0), seed=0)
    flipped = PlatformPairs(originals, served, views).build()
    plain = PlatformPairs(originals, served, dataclasses.replace(views, flip=False)).build()
    mirrored = 0
    for fo, fc, po, pc in zip(flipped.originals, flipped.compressed, plain.originals, plain.compressed):
        if np.array_equal(fo, po[:, ::-1]) and not np.array_equal(fo, po):
            mirrored += 1
            np.testing.assert_array_equal(fc, pc[:, ::-1])
        else:
            np.testing.assert_array_equal(fc, pc)
    assert mirrored > 0


def test_platform_ambiguous_stems_and_user_errors(tmp_path: Path, chelsea: np.ndarray) -> None:
    originals, served = tmp_path / "o", tmp_path / "s"
    originals.mkdir()
    served.mkdir()
    with pytest.raises(PairDataError, match="no photos"):
        PlatformPairs(originals, served).match()
    with pytest.raises(PairDataError, match="does not exist"):
        PlatformPairs(originals, tmp_path / "missing").match()
    _save(chelsea, originals / "x.png")
    _save(chelsea, originals / "x.jpg")
    _save(chelsea, served / "x.jpg")
    pairs, problems = PlatformPairs(originals, served).match()
    assert pairs == [] and len(problems) == 1 and "ambiguous" in problems[0].reason
    with pytest.raises(PairDataError, match="no file stems in common"):
        PlatformPairs(originals, served).build()
    _save(chelsea, originals / "y.png")
    (served / "y.jpg").write_bytes(b"broken")
    with pytest.raises(PairDataError, match="no usable pairs"):
        PlatformPairs(originals, served).build()


# ---------------------------------------------------------------------------------------------------- training


def _position_pairs(count: int, size: int) -> PairSet:
    """Pairs whose pixels encode (row, column, index), so a crop reveals where it came from."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    originals = np.stack([np.dstack([rows, cols, np.full_like(rows, n)]) for n in range(count)]).astype(np.uint8)
    return PairSet(originals, originals + 1, [f"p{n}" for n in range(count)])


def test_training_crops_are_aligned_and_paired() -> None:
    pairs = _position_pairs(5, 64)
    originals, compressed = training_crops(pairs, batch=40, crop=32, rng=np.random.default_rng(0))
    assert originals.shape == compressed.shape == (40, 32, 32, 3) and originals.dtype == np.uint8
    tops, lefts = originals[:, 0, 0, 0], originals[:, 0, 0, 1]
    assert set(tops) | set(lefts) <= {0, 16, 32} and len(set(tops)) > 1
    np.testing.assert_array_equal(compressed, originals + 1)
    np.testing.assert_array_equal(originals[:, 5, 7, 0], tops + 5)
    assert len(set(originals[:, 0, 0, 2])) > 1
    a, _ = training_crops(pairs, batch=8, crop=48, rng=np.random.default_rng(1), align=8)
    assert set(a[:, 0, 0, 0]) <= {0, 8, 16}
    full, _ = training_crops(pairs, batch=3, crop=64, rng=np.random.default_rng(2))
    assert set(full[:, 0, 0, 0]) == {0}


def test_training_crops_and_pair_set_errors() -> None:
    pairs = _position_pairs(2, 64)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="larger than"):
        training_crops(pairs, batch=2, crop=80, rng=rng)
    with pytest.raises(ValueError, match="multiple of align"):
        training_crops(pairs, batch=2, crop=24, rng=rng)
    with pytest.raises(ValueError, match="batch"):
        training_crops(pairs, batch=0, crop=16, rng=rng)
    with pytest.raises(ValueError, match="differ in shape"):
        PairSet(pairs.originals, pairs.compressed[:1], ["p0", "p1"])
    with pytest.raises(ValueError, match="names"):
        PairSet(pairs.originals, pairs.compressed, ["p0"])


def test_view_settings_check_themselves_and_are_shared_by_both_sources() -> None:
    views = ViewSettings(size=SIZE, views_per_photo=2, scale=(1, 1), flip=0, seed=3)
    assert views.scale == (1.0, 1.0) and views.flip is False
    assert ViewSettings() == ViewSettings(224, 16, (0.3, 1.0), True, 0)
    for kwargs, message in [({"size": 0}, "size"), ({"views_per_photo": 1.5}, "views_per_photo"),
                            ({"seed": -1}, "seed"), ({"scale": (0.0, 1.0)}, "scale"), ({"scale": "big"}, "scale")]:
        with pytest.raises(ValueError, match=message):
            ViewSettings(**kwargs)
