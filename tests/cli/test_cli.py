"""The command line end to end on real files: outputs, the closing table, the report, and user errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runs import run_cli_error
from PIL import Image

from comcloak.attacks.presets import DEFAULT_STRENGTH, PRESETS
from comcloak.cli.main import main
from comcloak.engine.archive_options import ArchiveOptions
from comcloak.engine.outputs import plan_outputs

FAST = ["--classifier", "tiny_classifier", "--steps", "2", "--attack-size", "48", "-q"]


@pytest.fixture()
def photo_dir(tmp_path: Path, sample_photos: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(sample_photos["chelsea"]).save(folder / "cat.jpg", quality=90)
    Image.fromarray(sample_photos["coffee"][:200, :300]).save(folder / "sub" / "coffee.png")
    return folder


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cloak_folder_writes_same_size_and_format(photo_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    code, stdout, _ = run_cli(["cloak", str(photo_dir), "-o", str(out), "--report", str(report), *FAST[:-1]], capsys)
    assert code == 0
    assert "protected after facebook (attacker's crop view)" in stdout and "cat.jpg" in stdout
    for relative, image_format in (("cat.jpg", "JPEG"), ("sub/coffee.png", "PNG")):
        with Image.open(photo_dir / relative) as original, Image.open(out / relative) as cloaked:
            assert cloaked.size == original.size and cloaked.format == image_format
    records = json.loads(report.read_text())["photos"]
    assert [Path(r["source"]).name for r in records] == ["cat.jpg", "coffee.png"]
    assert all(r["status"] == "cloaked" and r["psnr_db"] > 30 for r in records)
    # Lossless PNG: exactly the default preset's eps budget; JPEG adds its own re-encoding error.
    assert records[1]["linf"] <= PRESETS[DEFAULT_STRENGTH].eps


def test_done_photos_are_resumed_and_foreign_outputs_skipped_unless_overwrite(photo_dir: Path, tmp_path: Path,
                                                                               capsys) -> None:
    out = tmp_path / "out"
    assert run_cli(["cloak", str(photo_dir / "cat.jpg"), "-o", str(out), *FAST], capsys)[0] == 0
    before = (out / "cat.jpg").stat().st_mtime_ns
    report = tmp_path / "r.json"
    again = ["cloak", str(photo_dir / "cat.jpg"), "-o", str(out), "--report", str(report), *FAST]
    assert run_cli(again, capsys)[0] == 0
    [record] = json.loads(report.read_text())["photos"]
    assert record["status"] == "cloaked" and record["resumed"] and record["clean_label"] is not None
    assert (out / "cat.jpg").stat().st_mtime_ns == before
    (out / "coffee.png").write_bytes(b"somebody else's file")  # not in the manifest: never replaced silently
    code, _, _ = run_cli(["cloak", str(photo_dir / "sub" / "coffee.png"), "-o", str(out), "--report", str(report),
                          *FAST], capsys)
    assert code == 0 and json.loads(report.read_text())["photos"][0]["status"] == "skipped"
    assert (out / "coffee.png").read_bytes() == b"somebody else's file"
    assert run_cli(["cloak", str(photo_dir / "cat.jpg"), "-o", str(out), "--overwrite", *FAST], capsys)[0] == 0
    assert (out / "cat.jpg").stat().st_mtime_ns != before


def test_unreadable_file_is_a_record_not_a_crash(photo_dir: Path, tmp_path: Path, capsys) -> None:
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["cloak", str(photo_dir), "-o", str(out), *FAST[:-1]], capsys)
    assert code == 1  # some photos failed; the others are done
    assert "failed: " in stdout and "not a readable image" in stdout
    assert (out / "cat.jpg").exists() and not (out / "broken.jpg").exists()
    assert (photo_dir / "broken.jpg").read_bytes() == b"\xff\xd8 definitely not a jpeg"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--check", "jpeg:500"], "jpeg quality must be an integer in 1..100"),
        (["--check", "gif:3"], "unknown codec"),
        (["--eps", "300"], "argument --eps: must be in (0, 64] on the 0-255 scale, got 300"),
        (["--eps", "0"], "argument --eps: must be in (0, 64]"),
        (["--through", "diffjpeg:0"], "diffjpeg quality must be an integer in 1..100"),
        (["--classifier", "alexnet"], "alexnet"),
        (["--classifier", "resnet50"], "--classifier-weights PATH"),
        (["--attack", "pgd"], "argument --attack: invalid choice: 'pgd'"),
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--backend", "torch-cudagraph", "--device", "cpu"], "'torch-cudagraph' cannot run here: it needs a CUDA"),
        (["--backend", "onnxruntime", "--precision", "bf16"], "precision bf16 applies to the torch, torch-cudagraph"),
        (["--stop-after", "-1"], "stop_after must be 0 (off) or more steps, got -1"),
        (["--stop-margin", "-1"], "stop_margin must be in [0, 100], got -1.0"),
        (["--eps", "4", "--eps-start", "6"], "eps_start (6) must be at most eps (4): the budget grows to eps"),
        (["--eps-start", "0"], "argument --eps-start: must be in (0, 64] on the 0-255 scale, got 0"),
        (["--eps-ramp", "3"], "eps_ramp needs eps_start (the bound it grows from)"),
    ],
)
def test_user_errors_are_one_line_exit_2(photo_dir: Path, tmp_path: Path, capsys, extra, message) -> None:
    code, _, stderr = run_cli_error(["cloak", str(photo_dir), "-o", str(tmp_path / "out"), *FAST, *extra], capsys)
    assert code == 2
    assert message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_missing_input(tmp_path: Path, capsys) -> None:
    code, _, stderr = run_cli_error(["cloak", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o"), *FAST], capsys)
    assert code == 2 and "input not found" in stderr and stderr.count("\n") == 1


def test_output_inside_input_is_refused(photo_dir: Path, capsys) -> None:
    code, _, stderr = run_cli_error(["cloak", str(photo_dir), "-o", str(photo_dir / "cloaked"), *FAST], capsys)
    assert code == 2 and "is inside input folder" in stderr
    code, _, stderr = run_cli_error(["cloak", str(photo_dir / "cat.jpg"), "-o", str(photo_dir), *FAST], capsys)
    assert code == 2 and "would overwrite the input" in stderr


def test_console_script_reports_without_traceback(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: one line on stderr and exit status 2."""
    result = subprocess.run([sys.executable, "-m", "comcloak", "cloak", str(tmp_path / "missing"), "-o",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"comcloak cloak: error: {tmp_path / 'missing'}: input not found"


def test_eval_paper_protocol_small(tmp_path: Path, photo_dir: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    code, stdout, _ = run_cli(["eval", str(photo_dir), "--classifier", "tiny_classifier", "--attacks", "fgsm,mim",
                               "--through", "none,diffjpeg:50", "--codecs", "none,jpeg:50", "--steps", "2",
                               "--json", str(out), "-q"], capsys)
    assert code == 0 and "untargeted success" in stdout
    payload = json.loads(out.read_text())
    assert payload["n_photos"] == 2 and payload["protocol"] == "paper"
    combos = {(r["attack"], r["through"], r["codec"]) for r in payload["results"]}
    assert len(combos) == 2 * 2 * 2 and all(r["n"] == 2 for r in payload["results"])
    assert set(payload["quality"]) == {"psnr_mean", "psnr_p05", "ssim_mean", "linf_max"}
    assert payload["quality"]["linf_max"] <= 5 and "quality of the cloaks: PSNR mean" in stdout


def test_eval_cross_adds_the_mismatch_matrix(tmp_path: Path, photo_dir: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    code, _, _ = run_cli(["eval", str(photo_dir), "--classifier", "tiny_classifier", "--attacks", "fgsm",
                          "--through", "none", "--codecs", "none,jpeg:50,webp:75", "--cross", "--json", str(out),
                          "-q"], capsys)
    assert code == 0
    payload = json.loads(out.read_text())
    pairs = {(r["through"], r["codec"]) for r in payload["results"]}
    assert pairs == {(through, codec) for through in ("none", "comodel:jpeg:50", "comodel:webp:75")
                     for codec in ("none", "jpeg:50", "webp:75")}


def test_eval_comodel_auto_with_report_plot_and_examples(tmp_path: Path, photo_dir: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    outputs = {"--report": tmp_path / "r.md", "--plot": tmp_path / "bars.png", "--examples": tmp_path / "grid.png"}
    code, stdout, _ = run_cli(["eval", str(photo_dir), "--classifier", "tiny_classifier", "--attacks", "mim",
                               "--through", "none,comodel:auto", "--codecs", "jpeg:50,webp:50", "--steps", "2",
                               "--targeted", "--json", str(out), "-q",
                               *(arg for flag, path in outputs.items() for arg in (flag, str(path)))], capsys)
    assert code == 0 and "targeted success" in stdout
    payload = json.loads(out.read_text())
    assert {(r["through"], r["codec"]) for r in payload["results"]} == {
        (through, codec) for through in ("none", "comodel:auto") for codec in ("jpeg:50", "webp:50")}
    assert [row["codec"] for row in payload["clean_agreement"]] == ["jpeg:50", "webp:50"]
    assert all(0 <= row["agreement"] <= 1 and row["n"] == 2 for row in payload["clean_agreement"])
    report = outputs["--report"].read_text()
    assert "| mim | `comodel:auto` |" in report and "| clean | (no cloak) |" in report and "PSNR mean" in report
    with Image.open(outputs["--plot"]) as chart:
        assert chart.size == (1200, 520)
    with Image.open(outputs["--examples"]) as grid:
        # clean + (cloak, difference) for none, comodel:jpeg:50 and comodel:webp:50; one row per photo (2)
        assert grid.width == 4 + 7 * (224 + 4) and grid.height == 14 + 4 + 2 * (224 + 4)


def test_resnet50_from_a_user_weights_file(photo_dir: Path, tmp_path: Path, capsys) -> None:
    """ResNet50 has no offline weights: a torchvision-layout file given by path is used (random weights here)."""
    import torch

    from comcloak.models import create_model, save_safetensors

    torch.manual_seed(0)
    weights = save_safetensors(create_model("resnet50").state_dict(), tmp_path / "resnet50.safetensors")
    code, stdout, _ = run_cli(["cloak", str(photo_dir / "cat.jpg"), "-o", str(tmp_path / "out"), "--classifier",
                               "resnet50", "--classifier-weights", str(weights), "--steps", "1", "--attack-size",
                               "48"], capsys)
    assert code == 0 and "classifier='resnet50'" in stdout and (tmp_path / "out" / "cat.jpg").exists()


def test_eval_archive_protocol(tmp_path: Path, photo_dir: Path, capsys) -> None:
    out = tmp_path / "archive.json"
    code, stdout, _ = run_cli(["eval", str(photo_dir), "--protocol", "archive", "--classifier", "tiny_classifier",
                               "--attacks", "fgsm", "--through", "none,comodel:auto", "--codecs",
                               "none,resize:256+jpeg:85", "--json", str(out), "--report", str(tmp_path / "a.md"),
                               "-q"], capsys)
    assert code == 0 and "untargeted success" in stdout
    payload = json.loads(out.read_text())
    assert payload["protocol"] == "archive" and payload["n_photos"] == 2
    assert {(r["through"], r["codec"]) for r in payload["results"]} == {
        (through, codec) for through in ("none", "comodel:auto") for codec in ("none", "resize:256+jpeg:85")}
    assert payload["quality"]["linf_max"] <= 5 and payload["quality"]["psnr_mean"] > 30
    # Two photos: one cloak through none, two through comodel:auto (one per matched stand-in: none's, JPEG's).
    assert [p["attack"] for p in payload["quality_per_photo"]] == ["fgsm through none"] * 2 + [
        "fgsm through comodel:auto"] * 4
    report = (tmp_path / "a.md").read_text()
    assert "full resolution" in report and "flat-quarter RMS" in report
    code, _, err = run_cli(["eval", str(photo_dir), "--protocol", "archive", "--classifier", "tiny_classifier",
                            "--examples", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "does not apply to --protocol archive" in err


def test_photos_are_cloaked_grouped_by_attack_view_shape(tmp_path: Path, sample_photos, monkeypatch) -> None:
    """Photos arrive as wide, tall, wide, tall: the pipeline attacks the two shapes as two batches, not four."""
    from comcloak.engine import pipeline
    from comcloak.engine.cloaker import Cloaker

    folder = tmp_path / "in"
    folder.mkdir()
    wide, tall = sample_photos["coffee"][:64, :96], sample_photos["coffee"][:96, :64]
    for index, image in enumerate((wide, tall, wide, tall)):
        Image.fromarray(image).save(folder / f"{index}.png")
    batches = []
    original = pipeline.cloak_batch

    def recording(cloaker, photos):
        batches.append([photo.pixels.shape for photo in photos])
        return original(cloaker, photos)

    monkeypatch.setattr(pipeline, "cloak_batch", recording)
    cloaker = Cloaker(classifier="tiny_classifier", through="none", steps=1, attack_size=32, device="cpu")
    pairs = [(path, Path(path.name)) for path in sorted(folder.iterdir())]
    records = pipeline.cloak_files(cloaker, plan_outputs(pairs, tmp_path / "out", []), None,
                                  ArchiveOptions(batch_size=8))
    assert batches == [[(64, 96, 3)] * 2, [(96, 64, 3)] * 2]
    assert [Path(r.source).name for r in records] == ["0.png", "1.png", "2.png", "3.png"]  # reported in input order
    assert all(r.status == "cloaked" for r in records)


def test_a_photo_that_fails_to_cloak_is_a_failure_record(tmp_path: Path, sample_photos, monkeypatch) -> None:
    from comcloak.engine import pipeline
    from comcloak.engine.cloaker import Cloaker

    Image.fromarray(sample_photos["coffee"][:64, :96]).save(tmp_path / "a.png")
    cloaker = Cloaker(classifier="tiny_classifier", through="none", steps=1, attack_size=32, device="cpu")

    def broken(photos, batch_size=8):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cloaker, "cloak_photos", broken)
    [record] = pipeline.cloak_files(cloaker, plan_outputs([(tmp_path / "a.png", Path("a.png"))], tmp_path / "out", []),
                                     None)
    assert record.status == "failed" and "cloaking failed (RuntimeError: out of memory)" in record.error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_eval_platform_protocol(tmp_path: Path, photo_dir: Path, capsys) -> None:
    out, report = tmp_path / "platform.json", tmp_path / "platform.md"
    code, stdout, _ = run_cli(["eval", str(photo_dir), "--protocol", "platform", "--classifier", "tiny_classifier",
                               "--judges", "tiny_classifier,none", "--attacks", "fgsm", "--through", "none",
                               "--codecs", "facebook,whatsapp", "--views", "crop,resize,native", "--json", str(out),
                               "--report", str(report), "-q"], capsys)
    assert code == 0 and "view crop: protect@1 / hide@5" in stdout
    payload = json.loads(out.read_text())
    assert payload["protocol"] == "platform" and payload["judges"] == {"tiny_classifier": "surrogate"}
    rows = payload["results"]
    assert {(r["profile"], r["view"]) for r in rows} == {(p, v) for p in ("facebook", "whatsapp")
                                                         for v in ("crop", "resize", "native")}
    assert all(0 <= r["hide_at_5"] <= r["protect_at_1"] <= 1 and r["n"] == 2 for r in rows)  # hidden implies moved
    assert payload["quality"]["linf_max"] <= 5 and 0 < payload["quality"]["flat_rms_mean"] <= 5
    per_photo = payload["quality_per_photo"]  # each cloak's figures, named, to compare runs photo by photo
    assert [(p["attack"], p["photo"]) for p in per_photo] == [("fgsm through none", 0), ("fgsm through none", 1)]
    assert [p["name"] for p in per_photo] == ["cat.jpg", "sub/coffee.png"]
    assert all({"psnr", "ssim", "linf", "flat_rms"} <= set(p) and p["linf"] <= 5 for p in per_photo)
    assert payload["quality_by_attack"]["fgsm through none"]["flat_rms_mean"] == pytest.approx(
        np.mean([p["flat_rms"] for p in per_photo]))
    exposed = payload["unprotected"]  # each cloak that kept the clean top-1: what protect@1 counts, photo by photo
    for row in rows:
        kept = [e for e in exposed if (e["profile"], e["view"], e["classifier"]) == (row["profile"], row["view"],
                                                                                       row["classifier"])]
        assert len(kept) == round(row["n"] * (1 - row["protect_at_1"]))
        assert all(e["name"] == ["cat.jpg", "sub/coffee.png"][e["photo"]] for e in kept)
    text = report.read_text()
    assert "| `tiny_classifier` | surrogate |" in text and "### Quality per preset" in text
    assert "| cloaks | PSNR mean (dB) | PSNR 5th pct. (dB) | SSIM mean | flat-quarter RMS | max L∞ |" in text
    code, _, err = run_cli_error(["eval", str(photo_dir), "--protocol", "platform", "--views", "sideways"], capsys)
    assert code == 2 and "--views takes comma-separated crop, resize, native" in err


def test_attacker_views() -> None:
    from comcloak.attacks.views import attacker_view

    photo = np.zeros((300, 600, 3), np.uint8)
    photo[:, :150] = 255  # a white band the centre crop cuts away and the whole-photo resize keeps
    crop, whole = attacker_view(photo, "crop"), attacker_view(photo, "resize")
    assert crop.shape == whole.shape == (1, 3, 224, 224)
    assert crop.max() == 0 and whole.max() == 1

    class Wide:
        input_size = 260

    assert attacker_view(photo, "native", Wide()).shape == (1, 3, 260, 260)


def test_a_cloak_that_fools_only_the_lab_view_is_not_protected(tmp_path: Path, monkeypatch) -> None:
    """The closing table judges after the check codec in the attacker's crop view: a 'cloak' that only repaints the
    borders the centre crop cuts away changes the lab-view label and protects nothing."""
    from comcloak.engine import pipeline, report
    from comcloak.engine.cloaker import Cloaker, CloakResult

    rng = np.random.default_rng(3)
    photo = rng.integers(90, 160, (64, 256, 3), dtype=np.uint8)  # wide: the crop keeps only the middle columns
    Image.fromarray(photo).save(tmp_path / "wide.png")
    cloaker = Cloaker(classifier="tiny_classifier", through="none", steps=1, attack_size=32, device="cpu")
    lab_label = int(cloaker.predict(photo[None])[0])
    for fill in (0, 255, 128):  # find border paint that moves the lab view (the tiny net is arbitrary)
        painted = photo.copy()
        painted[:, :72] = fill
        painted[:, -72:] = 255 - fill
        if int(cloaker.predict(painted[None])[0]) != lab_label:
            break
    else:
        pytest.fail("no border paint moved the tiny classifier's lab-view label")

    def border_only(photos, batch_size=8):
        return [CloakResult(painted, lab_label, lab_label) for _ in photos]

    monkeypatch.setattr(cloaker, "cloak_photos", border_only)
    [record] = pipeline.cloak_files(
        cloaker, plan_outputs([(tmp_path / "wide.png", Path("wide.png"))], tmp_path / "out", []), None)
    assert record.status == "cloaked" and record.cloaked_label != record.clean_label  # the lab view is fooled
    assert record.check_label == record.clean_check_label and record.success is False  # the attacker is not
    table = report.format_table([record], "none")
    assert "Judged as an attacker sees the photo" in table and "0 protected after none" in table


def test_an_ensemble_cloak_is_judged_on_every_surrogate(photo_dir: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    code, stdout, _ = run_cli(["cloak", str(photo_dir / "cat.jpg"), "-o", str(tmp_path / "out"), "--classifier",
                               "tiny_classifier,tiny_classifier_b", "--steps", "2", "--attack-size", "48", "--check",
                               "instagram", "--report", str(report)], capsys)
    assert code == 0 and "classified by each surrogate" in stdout and "after instagram" in stdout
    [record] = json.loads(report.read_text())["photos"]
    assert set(record["protected_on"]) == {"tiny_classifier", "tiny_classifier_b"}
    assert record["success"] == all(record["protected_on"].values())
    settings = json.loads(report.read_text())["settings"]["config"]
    assert (settings["strength"], settings["loss"], settings["eot"]["draws"]) == ("balanced", "margin", 2)


def test_eval_platform_protocol_with_presets(tmp_path: Path, photo_dir: Path, capsys, monkeypatch) -> None:
    """--strengths cloaks with each preset as cloak --strength does; every surrogate of a preset is a surrogate row,
    the evaluation-only judges are evaluation rows. The tiny networks stand in for the presets' real ones."""
    from comcloak.attacks import presets

    tiny = {name: dataclasses.replace(preset, classifier="tiny_classifier,tiny_classifier_b", steps=1,
                                      attack_size=48) for name, preset in presets.PRESETS.items()}
    monkeypatch.setattr(presets, "PRESETS", tiny)
    out = tmp_path / "presets.json"
    code, stdout, _ = run_cli(["eval", str(photo_dir), "--protocol", "platform", "--strengths", "fast,paper",
                               "--judges", "none", "--codecs", "instagram", "--views", "crop", "--json", str(out),
                               "--report", str(tmp_path / "presets.md"), "-q"], capsys)
    assert code == 0 and "fast through comodel:jpeg:50, view crop" in stdout
    payload = json.loads(out.read_text())
    assert set(payload["attacks"]) == {"fast", "paper"} and payload["attacks"]["fast"]["draws"] == 1
    assert payload["classifier"] is None  # each preset's surrogates are in "attacks", not the --classifier default
    by_attack = payload["quality_by_attack"]  # each preset's own quality and time
    assert set(by_attack) == {"fast through comodel:jpeg:50", "paper through comodel:jpeg:50"}
    assert all(value["cloak_seconds_per_photo"] > 0 and value["psnr_mean"] > 30 and value["flat_rms_mean"] > 0
               for value in by_attack.values())
    assert all(value["steps_used_mean"] == value["steps_used_max"] == 1 for value in by_attack.values())  # no stop
    report = (tmp_path / "presets.md").read_text()
    assert "with the presets `fast` (surrogates `tiny_classifier`, `tiny_classifier_b`" in report
    assert "| fast through comodel:jpeg:50 |" in report and "| 1.0 (1–1) |" in report  # steps used
    assert {(r["attack"], r["classifier"], r["role"]) for r in payload["results"]} == {
        (attack, name, "surrogate") for attack in ("fast", "paper")
        for name in ("tiny_classifier", "tiny_classifier_b")}
    code, _, err = run_cli_error(["eval", str(photo_dir), "--strengths", "fast"], capsys)
    assert code == 2 and "--strengths applies to --protocol platform" in err


def test_eval_strengths_take_an_eps_given_even_when_it_equals_the_default() -> None:
    from comcloak.cli.evaluate import strength_configs

    given = build_parser_args(["eval", "photos", "--protocol", "platform", "--strengths", "strong", "--eps", "5"])
    assert [config.eps_255 for config in strength_configs(given, given.eps)] == [5]
    default = build_parser_args(["eval", "photos", "--protocol", "platform", "--strengths", "strong"])
    assert [config.eps_255 for config in strength_configs(default, default.eps)] == [8]  # the preset's own


def test_eval_strengths_apply_the_step_options_given(photo_dir: Path, capsys) -> None:
    """--alpha, --momentum and --draws reach each preset (they were silently dropped); where they cannot apply, the
    command says so instead of ignoring them."""
    from comcloak.cli.evaluate import strength_configs

    args = build_parser_args(["eval", "photos", "--protocol", "platform", "--strengths", "fast,balanced", "--alpha",
                              "0.5", "--momentum", "0.5", "--draws", "3"])
    configs = strength_configs(args, args.eps)
    assert [(round(c.alpha_255, 6), c.momentum, c.eot.draws) for c in configs] == [(0.5, 0.5, 3)] * 2
    plain = build_parser_args(["eval", "photos", "--protocol", "platform", "--strengths", "balanced"])
    balanced = PRESETS["balanced"]  # its step: eps / steps
    assert [(c.alpha_255, c.eot.draws) for c in strength_configs(plain, plain.eps)] == [
        (pytest.approx(balanced.eps / balanced.steps), balanced.draws)]
    code, _, err = run_cli_error(["eval", str(photo_dir), "--protocol", "platform", "--draws", "2"], capsys)
    assert code == 2 and "--draws applies with --strengths" in err
    for named in ("mobilenet_v2", "efficientnet_lite0"):  # the default named explicitly is refused too
        code, _, err = run_cli_error(["eval", str(photo_dir), "--protocol", "platform", "--strengths", "fast",
                                      "--classifier", named], capsys)
        assert code == 2 and "--classifier and --classifier-weights do not apply" in err


def build_parser_args(argv: list[str]):
    from comcloak.cli.main import build_parser

    return build_parser().parse_args(argv)


def test_every_help_renders_and_the_presets_state_their_measured_figures(capsys) -> None:
    from comcloak.cli.main import build_parser

    parser = build_parser()
    top = " ".join(parser.format_help().split())
    assert "(paper, archive, platform or faces protocol)" in top and "``" not in top  # current, and no docstring markup
    commands = next(action for action in parser._actions if action.dest == "command").choices
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0, command
        text = capsys.readouterr().out
        if command == "cloak":
            words = " ".join(text.split())  # argparse wraps the help where it likes
            assert "balanced: the default" in words and "measured: surrogates 97-100%" in words
