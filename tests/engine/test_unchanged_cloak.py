"""Issue 23, defect 9: a cloak that changed nothing (L-inf 0, the output identical to the input, as when re-cloaking
leaves the attack nothing to push) is never "cloaked": it is a failure record with its reason, no output is written,
the exit status says so, and the server answers a problem instead of the input back.

The surrogate here sees nothing (a zero gradient everywhere), so every attack step is exactly zero — the real
condition, reached on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from comcloak.cli.main import main
from comcloak.engine import cloaker as cloaker_module
from comcloak.engine.cloaker import Cloaker
from comcloak.engine.pipeline import CloakFailure, cloak_batch, unchanged_reason


class BlindClassifier(nn.Module):
    """The same logits for every photo; connected to the input so autograd runs, with a gradient of exactly zero."""

    num_classes = 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.linspace(0, 1, self.num_classes, device=x.device).expand(x.shape[0], -1)
        return logits + 0 * x.mean(dim=(1, 2, 3))[:, None]


@pytest.fixture()
def blind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloaker_module, "load_classifier", lambda name, weights=None: BlindClassifier())


def write_photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def test_the_cli_reports_a_no_op_cloak_as_failed_and_writes_nothing(tmp_path: Path, blind, capsys) -> None:
    source = write_photo(tmp_path / "in" / "p.png")
    before = source.read_bytes()
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = main(["cloak", str(source), "-o", str(out), "--classifier", "tiny_classifier", "--steps", "2",
                 "--attack-size", "48", "--check", "none", "--report", str(report), "-q"])
    err = capsys.readouterr().err
    assert code == 1  # a failure, not "cloaked" with exit 0
    [record] = json.loads(report.read_text())["photos"]
    assert record["status"] == "failed" and "the cloak changed nothing" in record["error"]
    assert record["output"] is None and not (out / "p.png").exists()
    assert "failed:" in err and "changed nothing" in err
    assert source.read_bytes() == before


def test_the_batch_step_turns_an_identical_cloak_into_a_failure(blind) -> None:
    from comcloak.codecs.photos import Photo

    pixels = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    cloaker = Cloaker(classifier="blind", through="none", steps=2, attack_size=32, device="cpu")
    assert np.array_equal(cloaker.cloak_photos([pixels])[0].cloaked, pixels)  # the API gives what it computed
    [result] = cloak_batch(cloaker, [Photo(pixels=pixels, format="PNG")])
    assert isinstance(result, CloakFailure) and not result.internal and "changed nothing" in result.error
    assert unchanged_reason(pixels, pixels) == result.error
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    assert unchanged_reason(pixels, changed) is None


def test_the_server_answers_a_problem_not_the_input_back(blind) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from serving import png_bytes, running_server

    from comcloak.serve.app import ServeSettings

    with running_server(ServeSettings(classifier="tiny_classifier", check="none")) as (base, _):
        answer = httpx.post(f"{base}/v1/cloak", params={"strength": "fast"}, content=png_bytes(), timeout=60)
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("application/problem+json")
    assert "the cloak changed nothing" in answer.json()["detail"]
