"""The faces protocol (comcloak.evaluation.faces): the pair bookkeeping over a judge of fixed descriptors, reading a
folder of people, quality, the cloak cache and the outputs, with the tiny face models (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from comcloak.attacks.faces import FaceCloakResult, FaceModels, FaceRecord, face_config
from comcloak.attacks.faces.compose import Region
from comcloak.errors import UserError
from comcloak.evaluation.face_cache import CloakCache, cloak_key
from comcloak.evaluation.face_judge import FaceJudge, JudgedFace
from comcloak.evaluation.face_report import face_markdown, write_face_chart
from comcloak.evaluation.faces import face_quality, match_face, read_people, run_face_protocol, tally_judge

TINY = dict(steps=1, draws=1, through="none", detector="tiny_yunet", recogniser="tiny_sface", min_psnr=0.0,
            work_size=32)


class FixedJudge(FaceJudge):
    """A judge over fixed descriptors (L2, same person within 0.5): :meth:`faces` returns one face covering the
    photo, described by its mean colour, so the protocol's bookkeeping can be followed exactly."""

    name, role, threshold = "fixed", "evaluation", 0.5

    def faces(self, photo: np.ndarray) -> list[JudgedFace]:
        if photo.mean() < 8:  # a black photo has no face
            return []
        height, width = photo.shape[:2]
        return [JudgedFace((0.0, 0.0, float(width), float(height)), photo.reshape(-1, 3).mean(0) / 32)]

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def judged(*descriptor: float, box=(0.0, 0.0, 10.0, 10.0)) -> JudgedFace:
    return JudgedFace(box, np.array(descriptor, float))


def test_pairs_self_misses_and_clean_misses_are_counted_apart() -> None:
    judge = FixedJudge()
    clean = {"a/1": judged(0, 0), "a/2": judged(0.3, 0), "a/3": None,  # a/3: no face when clean
             "b/1": judged(5, 5), "b/2": judged(9, 9)}  # b's two photos do not match when clean: no pair
    seen = {"a/1": judged(3, 0),  # moved away: its self-match and its pair with a/2 are broken
            "a/2": None,  # the judge no longer finds the face: a miss, its one pair missed, never broken
            "b/1": judged(5, 5.1),  # still itself
            "b/2": judged(0, 9)}  # no longer itself
    tally = tally_judge(judge, clean, seen).as_dict()
    assert tally == {"clean_misses": 1, "self_judged": 3, "self_broken": 2, "misses": 1, "pairs_clean": 2,
                     "pairs_judged": 1, "pairs_broken": 1, "pairs_missed": 1,
                     "self_broken_rate": pytest.approx(2 / 3), "pairs_broken_rate": 1.0}


def test_nothing_judged_has_no_rate() -> None:
    tally = tally_judge(FixedJudge(), {"a/1": judged(0, 0), "a/2": judged(0, 0)}, {}).as_dict()
    assert tally["misses"] == 2 and tally["pairs_missed"] == 2 and tally["pairs_broken"] == 0
    assert tally["self_broken_rate"] is None and tally["pairs_broken_rate"] is None


def test_the_cloaks_face_is_the_one_overlapping_the_clean_face_after_the_platforms_resize() -> None:
    clean = judged(0, box=(100, 100, 50, 50))
    elsewhere, same = judged(1, box=(0, 0, 40, 40)), judged(2, box=(49, 51, 26, 24))  # received at half size
    assert match_face(clean, [elsewhere, same], (2.0, 2.0)) is same
    assert match_face(clean, [elsewhere], (2.0, 2.0)) is None  # another face is a miss, not the person's face
    assert match_face(clean, [same], (1.0, 1.0)) is None  # without the scale it would not overlap


def write_photo(path, value: int, size=(40, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = np.clip(value + rng.integers(-6, 7, (*size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def test_reading_a_folder_of_people(tmp_path) -> None:
    write_photo(tmp_path / "ann" / "1.png", 100, (200, 100))
    write_photo(tmp_path / "ann" / "2.png", 110)
    (tmp_path / "ann" / "3.jpg").write_bytes(b"not a photo")
    (tmp_path / "ann" / "notes.txt").write_text("ignored")
    write_photo(tmp_path / "bob" / "1.png", 50)
    write_photo(tmp_path / "bob" / "2.png", 60)
    people = read_people(tmp_path, side=64)
    assert people.people() == {"ann": ["ann/1.png", "ann/2.png"], "bob": ["bob/1.png", "bob/2.png"]}
    assert people.photos["ann/1.png"].shape == (64, 32, 3) and people.side == 64  # longer side reduced
    assert len(people.failed) == 1 and "3.jpg" in people.failed[0]


@pytest.mark.parametrize("layout, message", [
    ({"1.png": 1, "2.png": 2}, "no PERSON/ subfolders"),
    ({"ann/1.png": 1, "ann/2.png": 2, "bob/1.png": 3}, "too few: bob (1)"),
])
def test_a_folder_that_is_not_people_is_a_one_line_error(tmp_path, layout: dict, message: str) -> None:
    for name, value in layout.items():
        write_photo(tmp_path / name, 40 * value)
    with pytest.raises(UserError) as info:
        read_people(tmp_path, side=64)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_quality_on_the_whole_photo_and_the_cloaked_regions() -> None:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    cloak = clean.copy()
    region = Region(10, 20, 30)
    cloak[region.slices()] = np.clip(cloak[region.slices()].astype(int) + rng.integers(-8, 9, (30, 30, 3)), 0, 255)
    record = FaceRecord((25.0, 15.0, 20.0, 20.0), 0.9, region, 1, 0.1, True, 0.5)
    quality = face_quality(clean, cloak, FaceCloakResult(cloak, (record,)))
    expected = skimage_metrics.structural_similarity(clean[region.slices()], cloak[region.slices()],
                                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                                     data_range=255, channel_axis=-1)
    assert quality["region_ssim"] == pytest.approx(expected, abs=1e-6)  # float32 SSIM, as in test_metrics
    assert quality["region_psnr"] < quality["psnr"] and quality["ssim"] > quality["region_ssim"]
    untouched = face_quality(clean, clean, FaceCloakResult(clean, ()))
    assert untouched["psnr"] == 99.0 and untouched["region_psnr"] is None


@pytest.fixture(scope="module")
def tiny_models() -> FaceModels:
    return FaceModels.create("tiny_yunet", "tiny_sface")


def test_the_protocol_writes_its_outputs_and_reuses_cached_cloaks(tmp_path, tiny_models) -> None:
    for person, values in {"ann": (100, 104), "bob": (200, 230)}.items():
        for index, value in enumerate(values):
            write_photo(tmp_path / "photos" / person / f"{index}.png", value)
    write_photo(tmp_path / "photos" / "cid" / "0.png", 0)  # black: no face for the judge when clean
    write_photo(tmp_path / "photos" / "cid" / "1.png", 2)
    people = read_people(tmp_path / "photos", side=48)
    config, cache = face_config(**TINY), CloakCache(tmp_path / "cache")
    judge = FixedJudge()
    result = run_face_protocol(people, config, [judge], ["wechat", "reshare"], models=tiny_models, cache=cache)
    payload = result.payload()
    assert {"protocol", "settings", "judges", "profiles", "results", "summary", "photos", "failed_photos", "side",
            "seconds"} <= set(payload)
    assert payload["profiles"] == ["wechat", "reshare"] and payload["judges"] == {"fixed": "evaluation"}
    row = payload["results"][0]
    assert row["clean_misses"] == 2 and row["pairs_clean"] == 2  # ann's two photos match; bob's do not
    assert row["self_judged"] + row["misses"] == 4
    assert payload["summary"]["photos"] == 6 and payload["summary"]["photos_from_cache"] == 0
    json.dumps(payload, allow_nan=False)  # strict JSON: no inf or nan
    report = face_markdown(payload)
    assert "| profile | fixed pairs broken | fixed self broken | fixed misses |" in report
    assert "| `wechat` |" in report and "| ann/0.png |" in report
    chart = write_face_chart(payload, tmp_path / "faces.png")
    with Image.open(chart) as image:
        assert image.size == (1200, 520)
    again = run_face_protocol(people, config, [judge], ["wechat", "reshare"], models=None, cache=cache).payload()
    assert again["summary"]["photos_from_cache"] == 6 and again["results"] == payload["results"]
    assert [photo["faces"] for photo in again["photos"]] == [photo["faces"] for photo in payload["photos"]]


def test_the_cache_keeps_each_face_loops_cloaks_apart() -> None:
    """The exported face step's cloaks differ from the torch loop's by rounding drift: they never share a key, and
    the torch loop's keys are those of before there was a choice (no backend in them)."""
    from comcloak.attacks.faces import face_config

    photo, config = np.zeros((8, 8, 3), np.uint8), face_config("faces")
    assert cloak_key(photo, config) == cloak_key(photo, config, "torch") != cloak_key(photo, config, "onnxruntime")


def test_a_cloak_stored_by_other_code_is_never_reused(monkeypatch) -> None:
    """The key holds a fingerprint of the cloak's code: after an edit to the loop, the models or the exported step,
    the stored cloaks are simply not found (no stale cloak is judged as the new code's)."""
    from comcloak.attacks.faces import face_config
    from comcloak.evaluation import face_cache

    photo, config = np.zeros((8, 8, 3), np.uint8), face_config("faces")
    fingerprint = face_cache.code_fingerprint()
    assert len(fingerprint) == 64 and fingerprint == face_cache.code_fingerprint()
    before = cloak_key(photo, config)
    monkeypatch.setattr(face_cache, "code_fingerprint", lambda: "0" * 64)
    assert cloak_key(photo, config) != before
