"""``comcloak bench --photos`` on the classifier cloak and ``--variant`` (issue 26): real photos' working views
attacked by torch and onnxruntime with the steps each used, several configurations timed in one run with their time
ratios to the first, and the one-line errors. The tiny networks, 3 tiny photos, one round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comcloak.cli.main import build_parser, main

TINY = ["--classifier", "tiny_classifier", "--through", "none", "--size", "32", "--min-seconds", "0",
        "--threads", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_photos) -> Path:
    """Three small photos, two working-view sizes (48x64 and 64x48 -> 32x42 and 42x32)."""
    folder = tmp_path_factory.mktemp("bench_photos")
    rocket = sample_photos["rocket"]
    for index, (height, width) in enumerate([(48, 64), (64, 48), (48, 64)]):
        crop = rocket[index * 40:index * 40 + 4 * height:4, index * 30:index * 30 + 4 * width:4]
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"p{index}.png")
    return folder


def test_photos_on_torch_and_onnxruntime_with_stopping_as_a_variant(photos: Path, tmp_path: Path) -> None:
    """The tiny surrogate labels every photo 501: aimed at 501 (--target), each photo is safe from the first step,
    so with --stop-after 1 it stops after one step on both backends, and that variant's time is a fraction of the
    baseline's, paired within the round."""
    pytest.importorskip("onnxruntime")
    output = tmp_path / "photos.json"
    result = subprocess.run(
        [sys.executable, "-m", "comcloak", "bench", "--photos", str(photos), "--backends", "torch,onnxruntime",
         *TINY, "--steps", "4", "--target", "501", "--variant", "base=", "--variant",
         "stop=--stop-after 1 --stop-margin 0", "--json", str(output), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    payload = json.loads(output.read_text())
    rows = {(row["variant"], row["backend"]): row for row in payload["results"]}
    assert list(rows) == [("base", "torch"), ("base", "onnxruntime"), ("stop", "torch"), ("stop", "onnxruntime")]
    for (variant, _), row in rows.items():
        assert row["steps_used"] == (4.0 if variant == "base" else 1.0)
        assert row["seconds_per_photo"] > 0 and row["peak_rss_mb"] > 50 and row["batch"] == 1
        assert len(row["vs_baseline_rounds"]) == 1
    assert rows["base", "onnxruntime"]["vs_baseline_rounds"] == [1.0]
    assert len(payload["photos"]) == 3 and list(payload["variants"]) == ["base", "stop"]
    assert "stop after 1 at margin 0" in payload["variants"]["stop"]
    table = output.with_suffix(".md").read_text()
    assert "| variant | backend | precision | batch | s/photo | photos/s |" in table
    assert "| stop | onnxruntime | fp32 | 1 |" in table and "Photos: 3, attacked one at a time" in table


def test_the_report_pairs_variants_within_rounds() -> None:
    from comcloak.engine.bench_results import BenchResult, BenchSettings, markdown_table, results_payload

    base = BenchSettings(classifier="tiny_classifier", through="none", steps=4, size=32, photos=("a.png",),
                         variant="base")
    new = BenchSettings(**{**base.__dict__, "variant": "new", "given": (("stop_after", 2),)})

    def result(variant: str, backend: str, speed: float, index: int, steps: float) -> BenchResult:
        return BenchResult(backend, "fp32", 1, speed, 300.0, 1.0, 3, round=index, variant=variant, steps_used=steps)

    # The machine is twice as fast in round 2: the paired ratios do not move.
    results = [result("base", "torch", 1.0, 0, 4), result("new", "torch", 2.0, 0, 2.5),
               result("base", "torch", 2.0, 1, 4), result("new", "torch", 4.0, 1, 2.5)]
    payload = results_payload(results, base, variants=[base, new])
    rows = {row["variant"]: row for row in payload["results"]}
    assert rows["new"]["vs_baseline_rounds"] == [0.5, 0.5] and rows["base"]["vs_baseline_rounds"] == [1.0, 1.0]
    assert rows["new"]["steps_used"] == 2.5 and rows["new"]["seconds_per_photo"] == 0.375
    assert "stop after 2" in payload["variants"]["new"]
    assert "| new | torch | fp32 | 1 | 0.375 | 3.000 | 1.00x (1.00–1.00) | 0.50x (0.50–0.50) | 2.5 | 300 |" in \
        markdown_table(payload)


def test_a_variant_wins_over_the_command_line_and_keeps_the_rest() -> None:
    from comcloak.cli.bench import bench_settings, variant_settings

    args = build_parser().parse_args(["bench", "--json", "x.json", "--strength", "balanced", "--eps", "4",
                                      "--steps", "3"])
    assert dict(bench_settings(args).given) == {"eps": 4.0}
    variant = variant_settings(args, "new=--budget texture --stop-after 2 --steps 5")
    assert (variant.variant, variant.steps, variant.strength) == ("new", 5, "balanced")
    config = variant.config
    assert (config.budget, config.stop_after, config.eps) == ("texture", 2, pytest.approx(4 / 255))
    assert bench_settings(args).config.budget == "capped"  # not given: the preset's


@pytest.mark.parametrize(("options", "message"), [
    (["--variant", "x=--no-such-option 1"], "--variant x: unrecognized arguments: --no-such-option 1"),
    (["--variant", "x=--eps many"], "--variant x: argument --eps: must be a number"),
    (["--variant", "--strength fast"], "--variant takes LABEL=OPTIONS"),
    (["--variant", "a=", "--variant", "a=--steps 2"], "--variant labels must differ"),
    (["--stop-after", "2"], "--stop-after needs --photos"),
    (["--variant", "a=", "--variant", "b=--stop-after 2"], "--variant b: --stop-after needs --photos"),
])
def test_bad_variants_and_stopping_on_random_images_are_one_line(options: list[str], message: str, capsys,
                                                                 tmp_path: Path) -> None:
    assert main(["bench", *TINY, *options, "--json", str(tmp_path / "x.json")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "x.json").exists()
