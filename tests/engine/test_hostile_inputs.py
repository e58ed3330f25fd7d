"""``comcloak cloak`` end to end on hand-made equivalents of the worst files of Pillow's test suite (issue 23): a
corrupt-EXIF JPEG and a warning-raising TIFF (which hung the run), transparent-colour PNGs, a 12-bit and a nearly
black 16-bit TIFF, a multi-picture JPEG, a 50000x50000 bomb header and animated and multi-page files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "codecs"))
import hostile_files  # noqa: E402

FAST = ["--classifier", "tiny_classifier", "--steps", "2", "--attack-size", "48", "--strength", "fast"]


def _hostile_folder(folder: Path) -> dict[str, np.ndarray]:
    """The files, and the alpha each transparent one must keep."""
    folder.mkdir()
    hostile_files.bad_exif_jpeg(folder / "bad_exif.jpg")
    hostile_files.warning_tiff(folder / "bad_tag.tif")
    hostile_files.twelve_bit_tiff(folder / "scan12.tif", hostile_files.gradient(high=30))
    hostile_files.sixteen_bit_tiff(folder / "dark16.tif", hostile_files.gradient(low=291, high=694))
    hostile_files.multi_picture_jpeg(folder / "stereo.jpg")
    hostile_files.bomb_png(folder / "bomb.png")
    hostile_files.animated_gif(folder / "anim.gif")
    hostile_files.multipage_tiff(folder / "pages.tif")
    alphas = {name: hostile_files.trns_png(folder / name, mode)[1] for name, mode in (("l_trns.png", "L"),
                                                                                   ("rgb_trns.png", "RGB"))}
    rgba = np.dstack([hostile_files.rgb(1), hostile_files.gradient().astype(np.uint8)])
    hostile_files.rgba_bmp(folder / "icon.bmp", rgba)
    return {**alphas, "icon.png": rgba[..., 3]}  # a BMP with alpha is written as PNG: Pillow's BMPs lose alpha


def test_hostile_files_each_get_one_honest_record(tmp_path: Path) -> None:
    alphas = _hostile_folder(tmp_path / "in")
    out, report = tmp_path / "out", tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-m", "comcloak", "cloak",
                           str(tmp_path / "in"), "-o", str(out), "--report", str(report), "-q", *FAST],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr  # some files failed, each alone; the others are done
    assert "Traceback" not in done.stderr
    records = {Path(record["source"]).name: record for record in json.loads(report.read_text())["photos"]}
    assert sorted(records) == sorted(path.name for path in (tmp_path / "in").iterdir())
    assert Path(records["icon.bmp"]["output"]).name == "icon.png" and not (out / "icon.bmp").exists()
    failed = {name: record["error"] for name, record in records.items() if record["status"] == "failed"}
    assert failed.keys() == {"bomb.png", "anim.gif", "pages.tif"}
    assert "refused as a possible decompression bomb" in failed["bomb.png"]
    assert failed["anim.gif"].endswith("anim.gif: animated image (2 frames): not supported, only single still "
                                       "images are cloaked")
    assert "multi-page TIFF (3 pages)" in failed["pages.tif"] and "corrupt" not in failed["pages.tif"]
    assert not any((out / name).exists() for name in failed)
    notes = {name: records[name]["notes"] or [] for name in records if name not in failed}
    records["icon.png"] = records.pop("icon.bmp")
    assert "Pillow warned: Corrupt EXIF data.  Expecting to read 12 bytes but only got 2." in notes["bad_exif.jpg"]
    assert "Pillow warned: Metadata Warning, tag 296 had too many entries: 2, expected 1" in notes["bad_tag.tif"]
    assert notes["stereo.jpg"][0].startswith("multi-picture JPEG (2 images)")
    for name, low, high in (("scan12.tif", 0, 30), ("dark16.tif", 291, 694)):  # visible, not 0..7
        assert any("span only" in note for note in notes[name])
        expected = np.rint(hostile_files.gradient(low=low, high=high) * (255 / high))  # scaled from 0 to the top
        with Image.open(out / name) as written:
            assert written.mode == "L" and np.abs(np.asarray(written) - expected).max() <= 6  # the cloak, eps 5
    for name, alpha in alphas.items():
        with Image.open(out / name) as written:
            assert written.mode in ("LA", "RGBA")
            np.testing.assert_array_equal(np.asarray(written)[..., -1], alpha)
    with Image.open(out / "stereo.jpg") as written:
        assert written.format == "JPEG" and written.size == (48, 48)
