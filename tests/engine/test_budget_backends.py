"""The texture budget through the Cloaker and its backends: torch and ONNX Runtime give the same cloaks, each
full-resolution pixel stays within its bound, a graph without the budget input is refused, and the CLI option end to
end (tiny networks, small photos, few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from comcloak.attacks.budget import texture_budget
from comcloak.cli.main import build_parser, main
from comcloak.cli.options import attack_config_from_args
from comcloak.codecs.tensors import to_tensor
from comcloak.engine.cloaker import Cloaker

TINY = dict(classifier="tiny_classifier,tiny_classifier_b", steps=3, attack_size=40, device="cpu", budget="texture")


def half_textured(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    photo = np.full((height, width, 3), 128, np.int64)
    photo[:, width // 2:] += rng.integers(-60, 61, (height, width - width // 2, 3))
    return photo.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(("strength", "budget"), [("paper", "texture"), ("balanced", "texture"),
                                                  ("balanced", "capped")])
def test_onnxruntime_gives_the_torch_cloaks_under_a_shaped_budget(tmp_path: Path, strength: str, budget: str) -> None:
    pytest.importorskip("onnxruntime")
    photos = [half_textured(48, 64, seed) for seed in range(2)]
    settings = dict(TINY, strength=strength, cache_dir=tmp_path, budget=budget)
    torch_cloaks = Cloaker(backend="torch", **settings).cloak_photos(photos)
    onnx_cloaks = Cloaker(backend="onnxruntime", **settings).cloak_photos(photos)
    uniform = Cloaker(backend="torch", **{**settings, "budget": "uniform"}).cloak_photos(photos)
    for ours, reference, flat in zip(onnx_cloaks, torch_cloaks, uniform):
        # Exact here; a sign of m within float noise of 0 could differ by one step on other inputs.
        assert np.mean(ours.cloaked != reference.cloaked) < 0.01
        assert not np.array_equal(reference.cloaked, flat.cloaked)  # the budget changed the cloak


@pytest.mark.parametrize("budget", ["texture", "capped"])
def test_each_full_resolution_pixel_stays_within_its_budget(tmp_path: Path, budget: str) -> None:
    photo = half_textured(120, 160, 5)
    cloaker = Cloaker(backend="torch", strength="paper", **{**TINY, "budget": budget})
    cloaked = cloaker.cloak_photos([photo])[0].cloaked
    config = cloaker.config
    bound = 255 * config.eps * texture_budget(to_tensor(photo[None], "cpu"), config, 120 / 40)[0, 0].numpy()
    change = np.abs(cloaked.astype(int) - photo.astype(int)).max(-1)
    assert np.all(change <= np.floor(bound + 0.5 + 1e-3))
    assert change[:, :60].max() <= 2  # the flat sky quiet
    assert change[:, 100:].max() > config.eps_255 if budget == "texture" else change[:, 100:].max() == config.eps_255


def test_a_step_graph_without_the_budget_input_is_refused(tmp_path: Path, stale_graph_metadata) -> None:
    pytest.importorskip("onnxruntime")
    from comcloak.engine.backends.registry import BackendUnavailableError

    # A format-4 graph's input list.
    stale_graph_metadata(lambda metadata: {**metadata, "inputs": metadata["inputs"].replace(",budget", "")})
    cloaker = Cloaker(backend="onnxruntime", strength="paper", cache_dir=tmp_path, **TINY)
    with pytest.raises(BackendUnavailableError, match="older comcloak"):
        cloaker.cloak_photos([half_textured(48, 64, 0)])


def test_the_budget_option_is_parsed_and_checked(capsys) -> None:
    parser = build_parser()
    cloak = ["cloak", "in.jpg", "-o", "out"]
    assert attack_config_from_args(parser.parse_args(cloak)).budget == "capped"  # balanced's own
    for budget in ("uniform", "texture", "capped"):
        assert attack_config_from_args(parser.parse_args([*cloak, "--budget", budget])).budget == budget
    with pytest.raises(SystemExit):
        parser.parse_args([*cloak, "--budget", "jnd"])
    assert "--budget" in capsys.readouterr().err


def test_comcloak_cloak_with_the_texture_budget_on_a_sample_photo(tmp_path: Path) -> None:
    from comcloak.samples import sample_photos

    rocket = next(path for path in sample_photos() if path.stem == "rocket")
    report = tmp_path / "report.json"
    args = ["cloak", str(rocket), "-o", str(tmp_path / "out"), "--classifier", "tiny_classifier", "--steps", "2",
            "--attack-size", "48", "--budget", "texture", "--report", str(report), "-q"]
    assert main(args) == 0
    record = json.loads(report.read_text())["photos"][0]
    assert record["status"] == "cloaked"
    assert json.loads(report.read_text())["settings"]["config"]["budget"] == "texture"


def test_the_uniform_budget_keeps_the_archive_settings_hash_and_texture_changes_it() -> None:
    from comcloak.attacks.presets import preset_config
    from comcloak.codecs.photos import DEFAULT_WRITE
    from comcloak.engine.archive_options import archive_settings

    uniform = archive_settings(preset_config("balanced", budget="uniform"), "keep", DEFAULT_WRITE, "fp32")
    assert not any(name.startswith("budget") for name in uniform["config"])  # as before the budget existed
    texture = archive_settings(preset_config("balanced", budget="texture"), "keep", DEFAULT_WRITE, "fp32")
    assert texture["config"]["budget"] == "texture" and texture != uniform
    assert "budget_knee" not in texture["config"]  # the capped budget's knob: the hash of before it existed
    capped = archive_settings(preset_config("balanced"), "keep", DEFAULT_WRITE, "fp32")  # balanced's own budget
    assert capped["config"]["budget_knee"] == 3 / 255 and "budget_ceiling" not in capped["config"]
