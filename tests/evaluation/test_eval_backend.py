"""``comcloak eval --backend/--precision``: the archive and platform protocols cloak through the named backend
(how bench/gpu.sh checks the CUDA-graph backend's protection against torch); the paper protocol refuses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from comcloak.cli.main import main

PLATFORM = ["--protocol", "platform", "--classifier", "tiny_classifier", "--judges", "none", "--attacks", "fgsm",
            "--through", "none", "--codecs", "facebook", "--views", "crop", "-q"]


def photo_folder(tmp_path: Path, sample_photos: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(sample_photos["chelsea"][:160, :240]).save(folder / "cat.png")
    return folder


def test_the_platform_protocol_cloaks_with_the_named_backend_and_precision(tmp_path, sample_photos, capsys) -> None:
    folder = photo_folder(tmp_path, sample_photos)
    out = tmp_path / "eval.json"
    assert main(["eval", str(folder), *PLATFORM, "--backend", "torch-per-image", "--precision", "bf16",
                 "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert (payload["backend"], payload["precision"], payload["device"]) == ("torch-per-image", "bf16", "cpu")
    assert {row["profile"] for row in payload["results"]} == {"facebook"}
    capsys.readouterr()
    # The backend reaches every Cloaker: one that cannot run here stops the run with its one-line reason.
    assert main(["eval", str(folder), *PLATFORM, "--backend", "torch-cudagraph", "--device", "cpu"]) == 2
    assert "torch-cudagraph" in capsys.readouterr().err


def test_the_paper_protocol_refuses_a_backend(tmp_path, sample_photos, capsys) -> None:
    folder = photo_folder(tmp_path, sample_photos)
    assert main(["eval", str(folder), "--backend", "torch-per-image"]) == 2
    assert "--backend and --precision apply to the archive and platform protocols" in capsys.readouterr().err
