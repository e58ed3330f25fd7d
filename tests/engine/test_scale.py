"""Archives on Ray Data (issue 15): a real local Ray runtime (``ray.init(num_cpus=2)``), real files, the tiny test
network. The Ray path must write byte-for-byte the outputs ``comcloak cloak`` writes with the same settings and seeds,
record every photo (bad ones as failures), and resume after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comcloak.cli.main import main
from comcloak.engine.manifest import MANIFEST_NAME, Manifest, file_sha256

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

TINY = ["--classifier", "tiny_classifier", "--steps", "2", "--attack-size", "48", "--check", "none", "-q"]
PHOTOS = 50


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _archive(folder: Path) -> list[Path]:
    """50 photos of a few sizes (so there are several attack-view shapes and partial batches), JPEG and PNG, one in a
    subfolder; plus a file whose header reads but whose pixels do not (its failure is recorded by a worker)."""
    rng = np.random.default_rng(11)
    paths = []
    for index in range(PHOTOS - 1):
        path = folder / ("sub" if index % 7 == 0 else "") / f"p{index:02d}.{'png' if index % 3 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        height, width = (48 + 8 * (index % 3), 64 + 16 * (index % 2))
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    truncated = folder / "truncated.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    paths.append(truncated)
    return paths


def _cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.suffix in (".jpg", ".png")}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, Path]:
    """The archive and its outputs from a plain ``comcloak cloak`` run (no Ray) with one torch thread, as each actor
    has (one CPU each): the thread count fixes torch's float summation order, so the outputs must match byte for
    byte."""
    root = tmp_path_factory.mktemp("ray-archive")
    _archive(root / "in")
    plain = subprocess.run([sys.executable, "-m", "comcloak", "cloak", str(root / "in"), "-o",
                            str(root / "plain"), *TINY], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert plain.returncode == 1, plain.stderr  # the truncated file fails
    return root / "in", root / "plain"


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_ray_run_writes_the_same_outputs_and_records_as_comcloak_cloak(ray_runtime, archive, tmp_path: Path) -> None:
    inputs, plain = archive
    out, report = tmp_path / "ray", tmp_path / "report.json"
    code = _cli(["cloak", str(inputs), "-o", str(out), *TINY, "--ray", "--ray-actors", "1,2", "--report", str(report)])
    assert code == 1  # one photo failed, the job went on
    expected = _outputs(plain)
    assert len(expected) == PHOTOS - 1 and _outputs(out) == expected  # byte for byte
    plain_latest, ray_latest = Manifest(plain).latest, Manifest(out).latest
    assert set(ray_latest) == set(plain_latest)
    for source, record in ray_latest.items():
        other = plain_latest[source]
        for key in ("status", "clean_label", "check_label", "success", "psnr_db", "output_sha256", "source_sha256",
                    "source_size", "settings_hash"):
            assert record[key] == other[key], (source, key)
        if record["status"] == "cloaked":
            assert file_sha256(out / record["output"]) == record["output_sha256"]
    failed = ray_latest[str((inputs / "truncated.png").resolve())]
    assert failed["status"] == "failed" and "truncated.png" in failed["error"]
    photos = json.loads(report.read_text())["photos"]
    assert len(photos) == PHOTOS and sum(photo["status"] == "cloaked" for photo in photos) == PHOTOS - 1

    # Resumable both ways: a plain rerun over the Ray folder finds everything done.
    code = _cli(["cloak", str(inputs), "-o", str(out), *TINY[:-1], "--report", str(report)])
    assert code == 1 and all(photo["resumed"] for photo in json.loads(report.read_text())["photos"]
                             if photo["status"] == "cloaked")


def test_cloak_dataset_takes_a_ray_dataset_and_resumes(ray_runtime, archive, tmp_path: Path) -> None:
    from comcloak.attacks.presets import preset_config
    from comcloak.engine.archive_options import ArchiveOptions
    from comcloak.engine.cloaker import CloakerSpec
    from comcloak.engine.scale import ActorPool, cloak_dataset

    inputs, plain = archive
    sources = sorted(path for path in inputs.rglob("p*.*"))[:12]
    dataset = ray.data.from_items([{"path": str(path), "relative": str(path.relative_to(inputs))}
                                   for path in sources])
    spec = CloakerSpec(preset_config("balanced", classifier="tiny_classifier", steps=2, attack_size=48))
    out = tmp_path / "out"
    seen = []
    options = ArchiveOptions(check="none")
    records = cloak_dataset(dataset, out, spec, options=options, pool=ActorPool(1, 2), on_photo_done=seen.append)
    assert sorted(record.source for record in records) == [str(path) for path in sources]
    records.sort(key=lambda record: record.source)
    assert all(record.status == "cloaked" and not record.resumed for record in records) and len(seen) == 12
    # Other batches than the plain run's (12 of its photos): float summation order only, at most one level.
    for record, source in zip(records, sources):
        reference = plain / source.relative_to(inputs)
        assert Path(record.output) == out / source.relative_to(inputs)
        assert np.abs(_pixels(Path(record.output)) - _pixels(reference)).max() <= 1

    mtimes = {record.output: Path(record.output).stat().st_mtime_ns for record in records}
    again = cloak_dataset(dataset, out, spec, options=options, pool=ActorPool(1, 2))
    assert all(record.resumed for record in again)
    assert {record.output: Path(record.output).stat().st_mtime_ns for record in again} == mtimes


def test_cloak_dataset_refuses_paths_outside_the_output_and_a_missing_path_column(ray_runtime, tmp_path) -> None:
    from comcloak.engine.scale import cloak_dataset
    from comcloak.errors import UserError

    with pytest.raises(UserError, match="'path' column"):
        cloak_dataset(ray.data.from_items([{"file": "a.jpg"}]), tmp_path / "out")
    with pytest.raises(UserError, match="inside the output folder"):
        cloak_dataset(ray.data.from_items([{"path": str(tmp_path / "a.jpg"), "relative": "../a.jpg"}]),
                      tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_killed_ray_run_resumes_to_the_same_outputs(ray_runtime, archive, tmp_path: Path) -> None:
    """A real ``comcloak cloak --ray`` (its own local Ray runtime) killed with SIGKILL, process group and all, once
    some photos are recorded; the rerun (on this process's runtime) skips them and completes the archive with the
    outputs of a plain run."""
    inputs, plain = archive
    out = tmp_path / "out"
    command = [sys.executable, "-m", "comcloak", "cloak", str(inputs), "-o", str(out), *TINY,
               "--batch-size", "1", "--ray", "--ray-actors", "1"]
    manifest = out / MANIFEST_NAME
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    recorded = 0
    while process.poll() is None and time.monotonic() < deadline and recorded < 5:
        time.sleep(0.05)
        if manifest.exists():
            recorded = sum(record.get("status") == "cloaked" for record in Manifest(out).latest.values())
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # it finished first: the assertion below says so
        pass
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL and 5 <= recorded < PHOTOS - 1  # killed mid-archive

    report = tmp_path / "report.json"
    rerun = ["cloak", str(inputs), "-o", str(out), *TINY, "--batch-size", "1", "--ray", "--ray-actors", "1,2"]
    assert _cli([*rerun, "--report", str(report)]) == 1  # the truncated file's failure, nothing else
    assert sum(photo["resumed"] for photo in json.loads(report.read_text())["photos"]) >= recorded
    assert _outputs(out) == _outputs(plain)
    assert not [path for path in out.rglob("*") if path.name.endswith(".part")]
    latest = Manifest(out).latest
    assert sum(record["status"] == "cloaked" for record in latest.values()) == PHOTOS - 1


def test_ray_options_need_ray_and_valid_ranges(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    base = ["cloak", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *TINY]
    assert _cli([*base, "--ray-actors", "2"]) == 2
    assert "--ray-actors applies to a Ray run; add --ray" in capsys.readouterr().err
    assert _cli([*base, "--ray", "--ray-actors", "3,1"]) == 2
    assert "MIN,MAX" in capsys.readouterr().err
    (tmp_path / "more").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "more" / "b.png")
    assert _cli(["cloak", "--ray", str(tmp_path / "in"), str(tmp_path / "more"), "-o", str(tmp_path / "out"),
                 *TINY]) == 2
    assert "put --ray after the inputs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_the_error_names_the_extra(monkeypatch) -> None:
    from comcloak.engine.scale import RayUnavailableError, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra looks like to import
    with pytest.raises(RayUnavailableError, match=r"comcloak\[ray\]"):
        import_ray()


def test_actor_pool_sizes_follow_the_cluster_unless_given() -> None:
    from comcloak.engine.scale import ActorPool
    from comcloak.errors import UserError

    assert ActorPool().sizes({"CPU": 16.0}) == (1, 16)
    assert ActorPool(cpus_per_actor=4).sizes({"CPU": 16.0}) == (1, 4)
    assert ActorPool(gpus_per_actor=1).sizes({"CPU": 64.0, "GPU": 8.0}) == (1, 8)
    assert ActorPool(min_actors=2, gpus_per_actor=1).sizes({"CPU": 64.0}) == (2, 2)  # no GPUs yet: the minimum
    assert ActorPool(min_actors=2, max_actors=5).sizes({"CPU": 1.0}) == (2, 5)
    for bad in ({"min_actors": 0}, {"min_actors": 3, "max_actors": 2}, {"cpus_per_actor": 0}):
        with pytest.raises(UserError):
            ActorPool(**bad)
