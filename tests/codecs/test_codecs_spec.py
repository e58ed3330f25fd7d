"""Codec spec strings: one-line errors that say what was asked and what is valid, canonical round-trips."""

from __future__ import annotations

import pytest

from comcloak.codecs import (
    Chain,
    CodecSpecError,
    Identity,
    Jpeg,
    Jpeg2000,
    Resize,
    WebP,
    codec_names,
    list_codecs,
    parse_codec,
)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("jpeg:500", "jpeg quality must be an integer in 1..100, got '500'"),
        ("jpeg:0", "jpeg quality must be an integer in 1..100, got '0'"),
        ("jpeg:abc", "jpeg quality must be an integer in 1..100, got 'abc'"),
        ("jpeg:50.5", "jpeg quality must be an integer in 1..100, got '50.5'"),
        ("jpeg", "jpeg expects 'jpeg:Q[:444|422|420]', got 'jpeg'"),
        ("jpeg:50:411", "jpeg chroma subsampling must be one of 444, 422, 420, got '411'"),
        ("jpeg:50:420:1", "jpeg expects 'jpeg:Q[:444|422|420]', got 'jpeg:50:420:1'"),
        ("webp:101", "webp quality must be an integer in 0..100, got '101'"),
        ("avif:-1", "avif quality must be an integer in 0..100, got '-1'"),
        ("jp2:0.5", "jp2 compression ratio must be a number > 1, got '0.5'"),
        ("jp2:1", "jp2 compression ratio must be a number > 1, got '1'"),
        ("jp2:inf", "jp2 compression ratio must be a number > 1, got 'inf'"),
        ("resize:0", "resize longest side must be an integer >= 1, got '0'"),
        ("resize:", "resize longest side must be an integer >= 1, got ''"),
        ("png:9", "png expects 'png', got 'png:9'"),
        ("none:1", "none expects 'none', got 'none:1'"),
    ],
)
def test_bad_argument_messages(spec: str, message: str) -> None:
    with pytest.raises(CodecSpecError) as info:
        parse_codec(spec)
    assert str(info.value) == message


@pytest.mark.parametrize("name", codec_names())
def test_unknown_codec_lists_the_known_ones(name: str) -> None:
    with pytest.raises(CodecSpecError) as info:
        parse_codec("foo:1")
    text = str(info.value)
    assert text.startswith("unknown codec 'foo' in 'foo:1'; known codecs: ")
    assert name in text


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "empty codec spec"),
        ("   ", "empty codec spec"),
        ("jpeg:50+", "empty element at position 2 of 2"),
        ("+jpeg:50", "empty element at position 1 of 2"),
        ("resize:64++jpeg:50", "empty element at position 2 of 3"),
        ("resize:64+jpg:50", "unknown codec 'jpg'"),
        ("resize:64+jpeg:500", "jpeg quality must be an integer in 1..100"),
    ],
)
def test_structural_errors(spec: str, fragment: str) -> None:
    with pytest.raises(CodecSpecError, match=fragment) as info:
        parse_codec(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["jpeg:500", "jpeg:abc", "foo:1", "jp2:0.5", "resize:0", "", "jpeg:50+", "webp"])
def test_every_error_is_one_line_and_a_value_error(spec: str) -> None:
    with pytest.raises(ValueError) as info:  # CodecSpecError subclasses ValueError
        parse_codec(spec)
    assert isinstance(info.value, CodecSpecError)
    text = str(info.value)
    # One line that names the offending codec (or says the spec is empty).
    assert "\n" not in text and (spec.split(":")[0] in text if spec.strip() else "empty" in text)


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("none", "none"),
        ("png", "png"),
        ("jpeg:50", "jpeg:50"),
        ("JPEG:050", "jpeg:50"),
        ("jpeg:50:420", "jpeg:50"),
        ("jpeg:50:444", "jpeg:50:444"),
        ("jpeg:1:422", "jpeg:1:422"),
        ("webp:0", "webp:0"),
        ("avif:60", "avif:60"),
        ("jp2:10", "jp2:10"),
        ("jp2:10.0", "jp2:10"),
        ("jp2:12.5", "jp2:12.5"),
        ("jp2:1.0001", "jp2:1.0001"),
        ("resize:2048", "resize:2048"),
        (" resize : 2048 + jpeg : 85 ", "resize:2048+jpeg:85"),
        ("resize:2048+jpeg:85+jp2:20", "resize:2048+jpeg:85+jp2:20"),
    ],
)
def test_canonical_spec_round_trips(spec: str, canonical: str) -> None:
    codec = parse_codec(spec)
    assert codec.spec == canonical == str(codec)
    again = parse_codec(codec.spec)
    assert again == codec and hash(again) == hash(codec) and again.spec == canonical
    assert repr(codec) == f"{type(codec).__name__}({canonical!r})"


def test_parse_builds_the_expected_objects() -> None:
    assert parse_codec("none") == Identity()
    assert parse_codec("jpeg:50") == Jpeg(50) == Jpeg(50, "420") != Jpeg(50, "444")
    assert parse_codec("webp:75") == WebP(75)
    assert parse_codec("jp2:20") == Jpeg2000(20)
    chain = parse_codec("resize:2048+jpeg:85")
    assert chain == Chain([Resize(2048), Jpeg(85)])
    assert isinstance(chain, Chain) and chain.codecs == (Resize(2048), Jpeg(85))
    # Nested chains flatten, so one pipeline has one spec however it was built.
    assert Chain([Chain([Resize(64)]), Jpeg(85)]) == chain.__class__([Resize(64), Jpeg(85)])


def test_preserves_size_flags() -> None:
    for spec in ("none", "png", "jpeg:50", "webp:50", "jp2:10", "avif:50", "png+jpeg:50"):
        assert parse_codec(spec).preserves_size, spec
    for spec in ("resize:64", "jpeg:90+resize:64"):
        assert not parse_codec(spec).preserves_size, spec


def test_direct_construction_is_validated_like_parsing() -> None:
    with pytest.raises(CodecSpecError, match="jpeg quality"):
        Jpeg(0)
    with pytest.raises(CodecSpecError, match="subsampling"):
        Jpeg(50, "4:2:0")
    with pytest.raises(CodecSpecError, match="jp2 compression ratio"):
        Jpeg2000(1)
    with pytest.raises(CodecSpecError, match="resize longest side"):
        Resize(0)
    with pytest.raises(CodecSpecError, match="at least one codec"):
        Chain([])


def test_non_string_spec_is_rejected() -> None:
    with pytest.raises(CodecSpecError, match="must be a string"):
        parse_codec(50)  # type: ignore[arg-type]


def test_list_codecs_describes_every_name() -> None:
    entries = list_codecs()
    assert [entry.split(":")[0].split("[")[0] for entry in entries] == list(codec_names())
    assert all(": " in entry for entry in entries)
