"""Recipe: add a codec with one class and one registration line, no comcloak file touched (docs/DESIGN.md §7).

The toy codec ``posterize:B`` keeps the top B bits of every channel. Once registered it is a codec like the shipped
ones: spec strings and platform chains parse it, ``comcloak cloak --check`` checks after it, and ``comodel:auto`` /
the paper preset's stand-in and ``comcloak train``'s ComModel setting are what it declares.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from comcloak.codecs import (
    Codec,
    CodecSpecError,
    ComModelSetting,
    codec_names,
    list_codecs,
    parse_codec,
    register_codec,
    unregister_codec,
)
from comcloak.codecs.base import check_image


@dataclass(frozen=True, repr=False)
class Posterize(Codec):
    """``posterize:B``: keeps the top B bits (1..8) of every channel."""

    bits: int

    name: ClassVar[str] = "posterize"
    usage: ClassVar[str] = "posterize:B"
    help: ClassVar[str] = "keep the top B bits of each channel, B in 1..8"

    @classmethod
    def from_args(cls, args: Sequence[str]) -> Posterize:
        if len(args) != 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= 8:
            got = ":".join(["posterize", *args])
            raise CodecSpecError(f"posterize expects 'posterize:B' with B in 1..8, got {got!r}")
        return cls(int(args[0]))

    @property
    def spec(self) -> str:
        return f"posterize:{self.bits}"

    @property
    def stand_in(self) -> str:
        return "diffjpeg:90"  # what comodel:auto and the paper preset attack through for it

    def comodel_setting(self) -> ComModelSetting:
        return ComModelSetting(block=4, chroma_subsampling=1, init_quality=90)

    def apply(self, image: np.ndarray) -> np.ndarray:
        check_image(image)
        return image & np.uint8((0xFF << (8 - self.bits)) & 0xFF)


@pytest.fixture()
def posterize() -> Iterator[type[Posterize]]:
    register_codec(Posterize)  # the one registration line
    yield Posterize
    unregister_codec(Posterize.name)
    assert Posterize.name not in codec_names()


def test_specs_and_platform_chains_accept_it(posterize) -> None:
    assert "posterize" in codec_names()
    assert "posterize:B: keep the top B bits of each channel, B in 1..8" in list_codecs()
    assert parse_codec("posterize:3") == Posterize(3)
    chain = parse_codec("facebook+posterize:3")
    assert chain.spec == "facebook+posterize:3" and parse_codec(chain.spec) == chain
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert np.array_equal(parse_codec("posterize:3").apply(image), image & 0b11100000)
    assert chain.apply(image).shape == image.shape  # facebook's resize never upscales
    with pytest.raises(CodecSpecError, match="posterize expects"):
        parse_codec("posterize:9")


def test_it_declares_its_stand_in_and_comodel_setting(posterize) -> None:
    from comcloak.attacks.through import matched_through_spec
    from comcloak.models.training import default_comodel_config

    assert matched_through_spec("posterize:3") == "diffjpeg:90"
    assert matched_through_spec("resize:64+posterize:3") == "comodel:jpeg:50"  # a chain: the generic stand-in
    config = default_comodel_config(parse_codec("posterize:3"), pairs=None)  # a declared quality: no calibration
    assert (config["block"], config["chroma_subsampling"], config["init_quality"]) == (4, 1, 90)


def test_comcloak_cloak_checks_after_it(posterize, sample_photos, tmp_path: Path, capsys) -> None:
    from comcloak.cli.main import main

    photo = tmp_path / "cat.png"
    Image.fromarray(sample_photos["chelsea"][:64, :96]).save(photo)
    report = tmp_path / "report.json"
    code = main(["cloak", str(photo), "-o", str(tmp_path / "out"), "--strength", "paper", "--classifier",
                 "tiny_classifier", "--steps", "2", "--attack-size", "48", "--check", "posterize:3",
                 "--report", str(report)])
    assert code == 0 and "after posterize:3" in capsys.readouterr().out
    assert json.loads(report.read_text())["settings"]["config"]["through"] == "diffjpeg:90"  # its declared stand-in


def test_the_registry_is_clean_again() -> None:
    assert "posterize" not in codec_names()
