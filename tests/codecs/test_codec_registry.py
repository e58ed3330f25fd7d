"""The codec registry: every registered codec is listed, looked up and described; each declares its own stand-in and
ComModel setting, and for every shipped codec these equal what the isinstance ladders they replaced decided."""

from __future__ import annotations

import pytest

from comcloak import plugins
from comcloak.codecs import CodecSpecError, ComModelSetting, codec_names, get_codec, list_codecs, parse_codec
from comcloak.codecs import registry as codec_registry

# Written from the old ladders before they were deleted (attacks/through.matched_through_spec's isinstance checks and
# models/training.default_comodel_config's): spec -> (comodel:auto's stand-in, the codec's own stand-in without a
# shipped ComModel, (block, chroma subsampling, initial quality or None: calibrated)).
OLD_LADDER = {
    "none": ("none", "none", (8, 1, None)),
    "png": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "jpeg:50": ("comodel:jpeg:50", "diffjpeg:50", (8, 2, 50)),
    "jpeg:60": ("diffjpeg:60", "diffjpeg:60", (8, 2, 60)),
    "jpeg:25:444": ("diffjpeg:25", "diffjpeg:25", (8, 1, 25)),
    "jpeg:75:422": ("diffjpeg:75", "diffjpeg:75", (8, 1, 75)),
    "webp:25": ("comodel:webp:25", "comodel:jpeg:50", (4, 2, None)),
    "webp:60": ("comodel:jpeg:50", "comodel:jpeg:50", (4, 2, None)),
    "jp2:10": ("comodel:jp2:10", "comodel:jpeg:50", (8, 1, None)),
    "jp2:20": ("comodel:jp2:20", "comodel:jpeg:50", (8, 1, None)),
    "avif:60": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "resize:2048": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "resize:2048+jpeg:85": ("comodel:resize:2048+jpeg:85", "comodel:jpeg:50", (8, 1, None)),
    "resize:512+webp:50": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "jpeg:60+webp:30": ("comodel:jpeg:50", "comodel:jpeg:50", (4, 2, None)),
    "webp:50+jpeg:70": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 2, 70)),
    "png+jpeg:40": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 2, 40)),
    "none+none": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "facebook+jpeg:50": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 2, 50)),
    "facebook": ("comodel:resize:2048+jpeg:85", "comodel:jpeg:50", (8, 1, None)),
    "instagram": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "twitter": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "whatsapp": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "wechat": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "webp-cdn": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "avif-cdn": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
    "reshare": ("comodel:jpeg:50", "comodel:jpeg:50", (8, 1, None)),
}


def _shipped(name: str) -> bool:
    return get_codec(name).__module__.startswith("comcloak.")


@pytest.mark.parametrize("name", codec_names())
def test_every_registered_codec_is_looked_up_and_described(name: str) -> None:
    codec = get_codec(name)
    assert codec.name == name
    assert any(line.startswith(f"{codec.usage}: {codec.help}") for line in list_codecs())


@pytest.mark.parametrize("name", codec_names())
def test_every_shipped_codec_is_in_the_old_ladder_table(name: str) -> None:
    if not _shipped(name):
        pytest.skip(f"{name} comes from a plugin")
    assert any(spec.split(":")[0] == name for spec in OLD_LADDER)


@pytest.mark.parametrize("spec", OLD_LADDER)
def test_declared_stand_in_and_setting_equal_the_old_ladders(spec: str) -> None:
    from comcloak.attacks.through import matched_through_spec

    auto, declared, (block, subsampling, quality) = OLD_LADDER[spec]
    codec = parse_codec(spec)
    assert matched_through_spec(spec) == auto
    assert codec.imitated.stand_in == declared
    setting = codec.comodel_setting()
    assert (setting.block, setting.chroma_subsampling, setting.init_quality) == (block, subsampling, quality)


def test_the_unknown_name_error_lists_the_names() -> None:
    with pytest.raises(CodecSpecError) as info:
        get_codec("foo")
    assert str(info.value) == f"unknown codec 'foo'; known codecs: {', '.join(codec_names())}"


def test_registration_is_checked() -> None:
    with pytest.raises(TypeError, match="Codec subclass"):
        codec_registry.register_codec(int)  # type: ignore[arg-type]


def test_lookups_load_the_entry_point_group_first(monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[str] = []
    monkeypatch.setattr(plugins, "load_plugins", lambda group: groups.append(group) or [])
    codec_names()
    get_codec("jpeg")
    assert groups == [plugins.CODECS, plugins.CODECS]


def test_the_generic_setting_is_the_default() -> None:
    assert ComModelSetting() == ComModelSetting(8, 1, None, False)
