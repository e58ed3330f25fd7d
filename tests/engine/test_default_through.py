"""The default stand-in follows the check codec: the shipped ComModel when one exists."""

from __future__ import annotations

import pytest

from comcloak import defaults
from comcloak.attacks import ThroughSpecError, make_through
from comcloak.attacks.through import ComModelThrough
from comcloak.attacks.through import matched_through_spec as default_through
from comcloak.models.comodel_io import list_shipped_comodels

PAPER_SETTINGS = ("jpeg:75", "jpeg:50", "jpeg:25", "webp:75", "webp:50", "webp:25", "jp2:10", "jp2:20")


def test_every_paper_setting_and_the_platform_chain_ship() -> None:
    shipped = list_shipped_comodels()
    assert set(PAPER_SETTINGS) | {"resize:2048+jpeg:85"} <= set(shipped)
    assert sum(path.stat().st_size for path in shipped.values()) <= 50 * 1024 * 1024


@pytest.mark.parametrize("check", [*PAPER_SETTINGS, "resize:2048+jpeg:85", "JPEG:050"])
def test_default_through_is_the_shipped_comodel_for_the_check_codec(check: str) -> None:
    through = default_through(check)
    assert through.startswith("comodel:")
    assert isinstance(make_through(through), ComModelThrough)


def test_default_through_without_a_shipped_comodel() -> None:
    assert default_through("none") == "none"
    assert default_through("jpeg:60") == "diffjpeg:60"
    assert default_through("avif:50") == defaults.THROUGH == "comodel:jpeg:50"


def test_unknown_codec_comodel_names_what_ships() -> None:
    with pytest.raises(ThroughSpecError, match="shipped: .*jpeg:50"):
        make_through("comodel:webp:13")
    with pytest.raises(ThroughSpecError, match="not a codec spec"):
        make_through("comodel:no-such-file.safetensors")
