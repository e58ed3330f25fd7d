"""The paper protocol: comodel:auto cloaks per codec with that codec's ComModel; quality of the cloaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import comcloak.models as M
from comcloak.attacks import attack_config, make_through
from comcloak.attacks.metrics import psnr
from comcloak.attacks.through import CodecMatchedThroughs, ThroughSpecError, matched_through_spec
from comcloak.codecs import parse_codec
from comcloak.evaluation.paper import cloak_passes, run_paper_protocol


def test_matched_stand_ins() -> None:
    assert matched_through_spec("jpeg:50") == "comodel:jpeg:50"
    assert matched_through_spec("webp:25") == "comodel:webp:25"
    assert matched_through_spec("resize:2048+jpeg:85") == "comodel:resize:2048+jpeg:85"
    assert matched_through_spec("none") == "none"
    assert matched_through_spec("jpeg:60") == "diffjpeg:60"
    assert matched_through_spec("png") == "comodel:jpeg:50"
    with pytest.raises(ThroughSpecError, match="only applies to comcloak eval"):
        make_through("comodel:auto")


def test_comodel_auto_cloaks_each_codec_through_its_own_comodel(sample_photos) -> None:
    classifier = M.freeze(M.create_model("tiny_classifier"))
    photos = [sample_photos["chelsea"], sample_photos["coffee"]]
    codecs = [parse_codec(spec) for spec in ("none", "jpeg:50", "webp:75", "jpeg:60")]
    auto = CodecMatchedThroughs()
    throughs = {"comodel:auto": auto, "none": make_through("none")}
    config = attack_config("bim", 4 / 255, steps=2)
    assert cloak_passes(throughs, codecs) == 4 + 1
    calls = []
    result = run_paper_protocol(classifier, photos, [config], throughs, codecs, progress=calls.append)
    assert sum(calls) == 2 * 5
    rows = {(row.through, row.codec): row for row in result.rows}
    assert set(rows) == {(through, codec.spec) for through in throughs for codec in codecs}
    # one cloak per distinct matched stand-in, keyed by it; "none" under auto is the plain attack's cloak
    assert set(result.cloaked) == {("bim", spec) for spec in ("none", "comodel:jpeg:50", "comodel:webp:75",
                                                               "diffjpeg:60")}
    assert not np.array_equal(result.cloaked[("bim", "comodel:jpeg:50")], result.cloaked[("bim", "comodel:webp:75")])
    assert rows[("comodel:auto", "none")].successes == rows[("none", "none")].successes


def test_quality_of_the_cloaks(sample_photos) -> None:
    classifier = M.freeze(M.create_model("tiny_classifier"))
    photos = [sample_photos["chelsea"], sample_photos["astronaut"]]
    result = run_paper_protocol(classifier, photos, [attack_config("fgsm", 3 / 255)], {"none": torch.nn.Identity()},
                                [parse_codec("none")])
    quality = result.quality()
    cloaks = result.cloaked[("fgsm", "none")]
    expected = [psnr(view, cloak) for view, cloak in zip(result.clean_views, cloaks)]
    assert quality["psnr_mean"] == pytest.approx(np.mean(expected))
    assert quality["psnr_p05"] <= quality["psnr_mean"]
    assert quality["linf_max"] == 3 and 0.5 < quality["ssim_mean"] < 1
