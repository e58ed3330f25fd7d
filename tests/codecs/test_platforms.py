"""Platform profiles: named chains usable wherever a codec spec is, keeping their name as their spec."""

from __future__ import annotations

import numpy as np
import pytest

from comcloak.codecs import PROFILES, CodecSpecError, Platform, list_profiles, parse_codec

EXPECTED = {"facebook": "resize:2048+jpeg:85", "instagram": "resize:1080+jpeg:75", "twitter": "resize:4096+jpeg:85",
            "whatsapp": "resize:1600+jpeg:60", "wechat": "resize:1280+jpeg:50", "webp-cdn": "resize:1600+webp:70",
            "avif-cdn": "resize:1600+avif:60", "reshare": "resize:1080+jpeg:75+resize:800+jpeg:60"}


def test_the_issue_profiles_exist_with_their_chains() -> None:
    assert {name: profile.chain for name, profile in PROFILES.items()} == EXPECTED


@pytest.mark.parametrize("name", ["facebook", "whatsapp", "reshare", "webp-cdn"])
def test_a_profile_applies_its_chain_and_keeps_its_name(name: str) -> None:
    codec = parse_codec(name.upper())
    assert isinstance(codec, Platform) and codec.spec == name and parse_codec(codec.spec) == codec
    image = np.random.default_rng(1).integers(0, 256, (700, 2400, 3), dtype=np.uint8)
    out = codec.apply(image)
    np.testing.assert_array_equal(out, parse_codec(EXPECTED[name]).apply(image))
    assert out.shape[:2] == codec.output_size(700, 2400)
    assert parse_codec(f"{name}+jpeg:50").spec == f"{name}+jpeg:50"  # profiles chain like any codec


def test_bad_profile_specs_are_one_line_errors() -> None:
    with pytest.raises(CodecSpecError, match="takes no arguments"):
        parse_codec("facebook:90")
    with pytest.raises(CodecSpecError, match="unknown platform profile"):
        Platform("myspace")
    assert any(line.startswith("facebook: Facebook") for line in list_profiles())


def test_a_profile_is_imitated_by_the_stand_in_of_its_chain() -> None:
    from comcloak.attacks.through import matched_through_spec

    assert matched_through_spec("facebook") == "comodel:resize:2048+jpeg:85"  # shipped for that chain
