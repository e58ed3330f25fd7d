"""`comcloak demo` with the shipped defaults: pretrained EfficientNet-Lite0 and MobileNetV2, YuNet and SFace (the
astronaut's face, under the default --protect both), bundled photos, no network."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from comcloak.cli.main import main
from comcloak.samples import sample_photos


def test_demo_writes_cloaks_and_sheet(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    # The default preset, --protect both and the facebook check; 2 steps each (20 and the face preset's by default)
    # change no code path and nothing asserted here, and take a fraction of the time.
    code = main(["demo", "-o", str(out), "--steps", "2", "--face-steps", "2"])
    stdout = capsys.readouterr().out
    assert code == 0
    samples = sample_photos()
    assert len(samples) >= 3
    for sample in samples:
        with Image.open(sample) as original, Image.open(out / sample.name) as cloaked:
            assert cloaked.size == original.size
        assert sample.name in stdout
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.height >= 224 * len(samples)
    assert f"{len(samples)} cloaked" in stdout
    assert "the L-inf budget map of rocket.jpg" in stdout  # the default uniform budget, said so on the sheet
    # The default --protect both: the astronaut's face is cloaked and its verdict shown; the others have no faces.
    assert "faces (after facebook)" in stdout and "faces: " in stdout
    [astronaut] = [line for line in stdout.splitlines() if line.startswith("astronaut.jpg")]
    assert "/1 protected" in astronaut
    assert "3 photo(s) without faces" in stdout
