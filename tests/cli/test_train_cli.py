"""``comcloak train`` and ``comcloak eval-commodel`` end to end on tiny real photo folders.

``test_train_smoke`` is the CI smoke test of training: 30 steps on 64 px views must beat doing nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from comcloak.cli.main import main
from comcloak.codecs.pairs import PlatformPairs, ViewSettings, split_held_out
from comcloak.models import TransformComModelConfig, comodel_io, read_safetensors_metadata
from comcloak.models.comodel_io import comodel_codec, load_comodel
from comcloak.samples import sample_folder

SAMPLES = sample_folder()
NAMES = ("astronaut", "chelsea", "coffee", "rocket")
TINY = ["--arch", "comodel_tc_tiny", "--size", "64", "--crop", "32", "--views-per-photo", "2"]
PROGRESS = re.compile(r"^step (\d+)/(\d+) +loss [\d.]+ +val MAE ([\d.]+) \(identity ([\d.]+)\)")


def small_photo(name: str, size: tuple[int, int] = (96, 80)) -> Image.Image:
    with Image.open(SAMPLES / f"{name}.jpg") as image:
        return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small photos; split_held_out holds out coffee.png, so three train and one validates."""
    folder = tmp_path_factory.mktemp("photos")
    for name in NAMES:
        small_photo(name).save(folder / f"{name}.png")
    train, held_out = split_held_out(folder.iterdir())
    assert [path.name for path in held_out] == ["coffee.png"] and len(train) == 3
    return folder


def run_cli(args: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(args)
    return code, stdout.getvalue(), stderr.getvalue()


def assert_user_error(result: tuple[int, str, str], message: str, command: str = "train") -> None:
    code, _, stderr = result
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith(f"comcloak {command}: error: "), stderr
    assert message in stderr, stderr


@pytest.fixture(scope="module")
def trained(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, str, str]]:
    output = tmp_path_factory.mktemp("trained") / "jpeg25.safetensors"
    result = run_cli(["train", "--codec", "jpeg:25", "--photos", str(photo_dir), "-o", str(output), *TINY,
                      "--steps", "30", "--batch", "4", "--validate-every", "10"])
    return output, result


def test_train_smoke(trained: tuple[Path, tuple[int, str, str]]) -> None:
    output, (code, stdout, stderr) = trained
    assert code == 0, stderr
    assert sorted(path.name for path in output.parent.iterdir()) == [output.name]  # no .ckpt, no temp file
    assert comodel_codec(output) == "jpeg:25"
    header = read_safetensors_metadata(output)
    assert header["comcloak.arch"] == "comodel_tc" and header["comcloak.train.steps"] == "30"
    assert header["comcloak.train.photos"] == "3" and header["comcloak.train.held_out"] == "1"
    model = load_comodel(output)
    assert model.config == TransformComModelConfig(8, 2, 25, 4)  # plain JPEG: its own quality, 4:2:0

    lines = stderr.splitlines()
    assert lines[0].startswith("training comodel_tc") and "on jpeg:25: 6 views from 3 photos, 1 held-out" in lines[0]
    progress = [PROGRESS.match(line) for line in lines[1:]]
    assert all(progress), lines
    assert [(int(m[1]), int(m[2])) for m in progress] == [(10, 30), (20, 30), (30, 30)]
    val_mae, identity = float(progress[-1][3]), float(progress[-1][4])
    assert val_mae < identity, (val_mae, identity)
    assert float(header["comcloak.train.val_mae"]) == pytest.approx(val_mae, abs=1e-3)
    assert stdout.startswith(f"wrote {output}: val MAE")


def test_existing_output_is_kept(trained: tuple[Path, tuple[int, str, str]], photo_dir: Path) -> None:
    output, _ = trained
    before = output.read_bytes()
    args = ["train", "--codec", "jpeg:25", "--photos", str(photo_dir), "-o", str(output), *TINY, "--steps", "2"]
    assert_user_error(run_cli(args), "exists; pass --overwrite to replace it")
    # --resume on a finished run (no checkpoint left) has nothing to continue: it neither retrains nor fails.
    code, _, stderr = run_cli([*args, "--resume"])
    assert code == 0 and "already trained" in stderr
    assert output.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--codec", "jpeg:25"], "--codec needs --photos DIR"),
        (["--codec", "gif:3", "--photos", "{photos}"], "unknown codec"),
        (["--codec", "jpeg:25", "--photos", "{missing}"], "does not exist"),
        (["--codec", "jpeg:25", "--photos", "{photos}", "--size", "40"], "--size must be a multiple of 16, got 40"),
        (["--codec", "jpeg:25", "--photos", "{photos}", "--crop", "128"], "--crop 128 is larger than --size 64"),
        (["--codec", "jpeg:25", "--photos", "{photos}", "--crop", "24"], "crop must be a multiple of 16"),
        (["--codec", "jpeg:25", "--photos", "{photos}", "--seed", "-1"], "seed must be an integer >= 0"),
        (["--codec", "jpeg:25", "--photos", "{one}"], "need at least 2 photos"),
        (["--pairs", "{photos}", "{photos}", "--photos", "{photos}"], "--photos is for --codec"),
        (["--codec", "jpeg:25", "--photos", "{photos}", "--arch", "comodel_tiny", "--block", "4"],
         "apply to comodel_tc, not comodel_tiny"),
    ],
)
def test_train_user_errors(photo_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    one = tmp_path / "one"
    one.mkdir()
    small_photo("chelsea").save(one / "chelsea.png")
    paths = {"photos": str(photo_dir), "missing": str(tmp_path / "nowhere"), "one": str(one)}
    output = tmp_path / "out.safetensors"
    tiny = ["--size", "64", "--crop", "32", "--views-per-photo", "1", "--steps", "1"]
    argv = ["train", "-o", str(output), *tiny, *(arg.format(**paths) for arg in args)]
    assert_user_error(run_cli(argv), message)
    assert not output.exists()


def test_output_must_be_safetensors(photo_dir: Path, tmp_path: Path) -> None:
    argv = ["train", "--codec", "jpeg:25", "--photos", str(photo_dir), "-o", str(tmp_path / "out.pt"), *TINY]
    assert_user_error(run_cli(argv), "output must end in .safetensors")


# ------------------------------------------------------------------------------------------------ platform pairs


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Originals as PNG and what a "platform" served back: JPEG at quality 30, half of them downscaled by 2."""
    root = tmp_path_factory.mktemp("platform")
    original_dir, compressed_dir = root / "originals", root / "served"
    original_dir.mkdir()
    compressed_dir.mkdir()
    for index, name in enumerate(NAMES):
        photo = small_photo(name, (128, 96))
        photo.save(original_dir / f"{name}.png")
        served = photo.resize((64, 48), Image.Resampling.LANCZOS) if index % 2 else photo
        served.save(compressed_dir / f"{name}.jpg", quality=30)
    return original_dir, compressed_dir


def test_platform_pairs_include_keeps_a_subset(platform: tuple[Path, Path]) -> None:
    original_dir, compressed_dir = platform
    everything, _ = PlatformPairs(original_dir, compressed_dir).match()
    assert len(everything) == 4
    kept, problems = PlatformPairs(original_dir, compressed_dir, include=lambda path: path.stem != "coffee").match()
    assert [original.name for original, _ in kept] == ["astronaut.png", "chelsea.png", "rocket.png"]
    assert problems == []  # excluded pairs are not problems
    pairs = PlatformPairs(original_dir, compressed_dir, ViewSettings(size=32, views_per_photo=1),
                          include=lambda path: path.stem == "coffee").build()
    assert pairs.names == ["coffee.png"]


def test_train_on_platform_pairs(platform: tuple[Path, Path], tmp_path: Path) -> None:
    original_dir, compressed_dir = platform
    output = tmp_path / "platform.safetensors"
    code, stdout, stderr = run_cli(["train", "--pairs", str(original_dir), str(compressed_dir), "-o", str(output),
                                    *TINY, "--steps", "2", "--batch", "2", "--validate-every", "2", "-q"])
    assert code == 0, stderr
    assert stderr == ""  # -q: no progress lines
    assert "wrote" in stdout and output.is_file()
    assert comodel_codec(output) == "platform:served"
    config = load_comodel(output).config
    assert (config.block, config.chroma_subsampling, config.refine_width) == (8, 1, 4)  # unknown codec: 4:4:4


# ------------------------------------------------------------------------------------------------ eval-commodel


def test_eval_commodel_report(trained: tuple[Path, tuple[int, str, str]], photo_dir: Path, tmp_path: Path) -> None:
    output, _ = trained
    report = tmp_path / "r.json"
    code, stdout, stderr = run_cli(["eval-commodel", "--codec", "jpeg:25", "--photos", str(photo_dir), "--weights",
                                    str(output), "--json", str(report), "--size", "64"])
    assert code == 0, stderr
    result = json.loads(report.read_text())
    assert set(result) == {"codec", "n_photos", "mae", "identity_mae", "diffjpeg_mae"}
    assert result["codec"] == "jpeg:25" and result["n_photos"] == 4
    assert isinstance(result["diffjpeg_mae"], float)
    assert result["mae"] < result["identity_mae"]
    assert stdout.startswith("jpeg:25: ComModel MAE") and "diff-JPEG" in stdout

    held = tmp_path / "held.json"
    code, stdout, _ = run_cli(["eval-commodel", "--codec", "webp:50", "--photos", str(photo_dir), "--weights",
                               str(output), "--json", str(held), "--size", "64", "--held-out"])
    assert code == 0
    result = json.loads(held.read_text())
    assert result["diffjpeg_mae"] is None and result["n_photos"] == 1 and result["codec"] == "webp:50"
    assert "diff-JPEG" not in stdout


def test_eval_commodel_user_errors(photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comodel_io, "WEIGHTS_DIR", tmp_path / "no-weights")
    base = ["eval-commodel", "--photos", str(photo_dir)]
    assert_user_error(run_cli([*base, "--codec", "webp:13"]), "no shipped ComModel for codec 'webp:13'; shipped: none",
                      "eval-commodel")
    assert_user_error(run_cli([*base, "--codec", "jpeg:50", "--size", "40"]), "--size must be a multiple of 16",
                      "eval-commodel")
    assert_user_error(run_cli([*base, "--codec", "jpeg:500"]), "jpeg quality must be an integer in 1..100",
                      "eval-commodel")
    assert_user_error(run_cli([*base, "--codec", "jpeg:50", "--weights", str(tmp_path / "none.safetensors")]),
                      "no such weights file", "eval-commodel")

