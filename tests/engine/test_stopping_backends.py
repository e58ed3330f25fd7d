"""Per-photo stopping on the backends (issue 26): ONNX Runtime stops the same photos at the same steps as the torch
reference, with the same cloaks within the parity tolerance; the per-image runner too; the captured-loop runners
refuse it at construction; a step graph that averages its logits over the draws is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import comcloak.models as M
from comcloak.attacks import AttackConfigError, attack_config
from comcloak.attacks.config import EotSettings
from comcloak.engine.backends.torch_runner import CudaGraphTorchRunner, PerImageTorchRunner, TorchRunner
from comcloak.export.step_io import StepSpec

HEIGHT = WIDTH = 40
EOT = EotSettings(draws=2, view_size=32)


def _ensemble() -> torch.nn.ModuleList:
    return torch.nn.ModuleList([M.freeze(M.create_model(name)) for name in ("tiny_classifier", "tiny_classifier_b")])


def _batch(ensemble: torch.nn.ModuleList) -> tuple[torch.Tensor, torch.Tensor]:
    """Four images; 0 and 2 aim away from each surrogate's least likely class (safe from the start), 1 and 3 from
    its top-1."""
    generator = torch.Generator().manual_seed(3)
    smooth = F.interpolate(torch.rand(4, 3, 8, 8, generator=generator), size=(HEIGHT, WIDTH), mode="bilinear")
    x0 = (smooth + 0.05 * torch.rand(4, 3, HEIGHT, WIDTH, generator=generator)).clamp(0, 1)
    with torch.no_grad():
        logits = torch.stack([member(x0) for member in ensemble], dim=1)  # (N, M, K)
    even = (torch.arange(4) % 2 == 0)[:, None]
    return x0, torch.where(even, logits.argmin(dim=2), logits.argmax(dim=2))


@pytest.fixture(scope="module")
def robust_graph(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    from comcloak.export import OnnxFromTorch

    path = tmp_path_factory.mktemp("stopping") / "step.onnx"
    OnnxFromTorch(_ensemble(), None, HEIGHT, WIDTH, path, spec=StepSpec("ce", EOT))()
    return path


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_onnxruntime_stops_the_photos_torch_stops(robust_graph: Path, margin: float) -> None:
    from comcloak.engine.backends.onnxruntime_runner import OnnxRuntimeRunner

    ensemble = _ensemble()
    x0, goal = _batch(ensemble)
    config = attack_config("mim", 8 / 255, steps=6, eot=EOT, stop_after=2, stop_margin=margin)
    with TorchRunner(ensemble, None, config) as runner:
        reference = runner.infer_result(x0, goal)
    with OnnxRuntimeRunner(robust_graph, config) as runner:
        ours = runner.infer_result(x0, goal)
    assert 2 in reference.steps_used.tolist() and reference.steps_used.max() > 2  # stopped and compacted
    assert ours.steps_used.tolist() == reference.steps_used.tolist()
    # The cloak parity of the exported step (tests/export): a sign within float noise of 0 may differ by one step.
    assert (ours.images - reference.images).abs().max() <= 2 * config.alpha + 1e-6
    assert ((ours.images - reference.images).abs() > 1e-5).float().mean() < 0.01
    with OnnxRuntimeRunner(robust_graph, attack_config("mim", 8 / 255, steps=6, eot=EOT)) as runner:
        plain = runner.infer_result(x0, goal)
    assert plain.steps_used.tolist() == [6] * 4
    assert not torch.equal(plain.images, ours.images)


def test_the_per_image_runner_stops_as_the_batch_does() -> None:
    ensemble = _ensemble()
    x0, goal = _batch(ensemble)
    config = attack_config("mim", 8 / 255, steps=5, eot=EOT, stop_after=2, stop_margin=0.0)
    with TorchRunner(ensemble, None, config) as runner:
        batched = runner.infer_result(x0, goal)
    with PerImageTorchRunner(ensemble, None, config) as runner:
        alone = runner.infer_result(x0, goal)
    assert torch.equal(batched.images, alone.images) and torch.equal(batched.steps_used, alone.steps_used)


def test_the_captured_loop_refuses_stopping_at_construction() -> None:
    config = attack_config("mim", 8 / 255, steps=3, stop_after=2)
    with pytest.raises(AttackConfigError, match="cannot stop photos early") as error:
        CudaGraphTorchRunner(_ensemble(), None, config, torch.device("cuda"))
    assert "\n" not in str(error.value)
    from comcloak.engine.backends.tensorrt_runner import TensorRTRunner

    with pytest.raises(AttackConfigError, match="cannot stop photos early"):
        TensorRTRunner("step.onnx", config)


def test_a_graph_averaging_its_logits_is_refused_for_stopping(robust_graph: Path, monkeypatch) -> None:
    from comcloak.engine.backends import exported
    from comcloak.engine.backends.onnxruntime_runner import OnnxRuntimeRunner
    from comcloak.engine.backends.registry import BackendUnavailableError

    real = exported.read_export_metadata
    monkeypatch.setattr(exported, "read_export_metadata",
                        lambda path: {k: v for k, v in real(path).items() if k != "logits_per_draw"})
    config = attack_config("mim", 8 / 255, steps=3, eot=EOT, stop_after=2)
    with pytest.raises(BackendUnavailableError, match="each draw's: export it again"):
        OnnxRuntimeRunner(robust_graph, config).activate()
    OnnxRuntimeRunner(robust_graph, attack_config("mim", 8 / 255, steps=3, eot=EOT)).activate()  # off: fine


def test_steps_used_reach_the_cloaker_the_table_the_report_and_the_manifest(tmp_path: Path, capsys) -> None:
    import json

    import numpy as np
    from PIL import Image

    from comcloak.cli.main import main
    from comcloak.engine.cloaker import Cloaker

    photos = [(np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8) for seed in range(2)]
    tiny = dict(classifier="tiny_classifier", steps=4, attack_size=40, device="cpu", strength="balanced", draws=2,
                through="none", view_size=32)
    cloaks = Cloaker(backend="torch", stop_after=1, stop_margin=100.0, **tiny).cloak_photos(photos)
    assert [cloak.steps_used for cloak in cloaks] == [4, 4]  # a margin never reached: no photo stops
    stopped = Cloaker(backend="torch", stop_after=1, stop_margin=0.0, **tiny).cloak_photos(photos)
    plain = Cloaker(backend="torch", **tiny).cloak_photos(photos)
    assert [cloak.steps_used for cloak in plain] == [4, 4]
    (tmp_path / "in").mkdir()
    for seed, photo in enumerate(photos):
        Image.fromarray(photo).save(tmp_path / f"in/p{seed}.png")
    report = tmp_path / "report.json"
    args = ["cloak", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--classifier", "tiny_classifier",
            "--steps", "4", "--attack-size", "40", "--draws", "2", "--through", "none", "--stop-after", "1",
            "--stop-margin", "0",
            "--check", "none", "--report", str(report)]
    assert main(args) in (0, 1)
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("photo"))
    assert header.split()[-1] == "steps" and "; steps used: mean" in table.splitlines()[-1]
    payload = json.loads(report.read_text())
    used = sorted(record["steps_used"] for record in payload["photos"])
    assert used == sorted(cloak.steps_used for cloak in stopped)
    assert payload["steps_used"] == {"mean": sum(used) / 2, "min": used[0], "max": used[1]}
    manifest = [json.loads(line) for line in (tmp_path / "out/comcloak-manifest.jsonl").read_text().splitlines()]
    assert sorted(entry["steps_used"] for entry in manifest if "steps_used" in entry) == used


def test_auto_picks_a_backend_that_stops_photos_early() -> None:
    from comcloak.engine.backends.factory import available_backends, unavailable_reason

    cuda = torch.device("cuda")
    for name in ("torch-cudagraph", "tensorrt"):
        assert "cannot stop photos early" in unavailable_reason(name, cuda, stopping=True)
        assert name not in available_backends(cuda, stopping=True)
    assert unavailable_reason("torch", cuda, stopping=True) is None
    assert available_backends(torch.device("cpu"), stopping=True)[-1] == "torch"


@pytest.mark.parametrize("changed", [dict(), dict(stop_after=2, stop_margin=0.5),
                                     dict(stop_after=2, stop_margin=0.5, budget="texture")],
                         ids=["ramp", "ramp+stop", "ramp+stop+texture"])
def test_onnxruntime_grows_the_budget_as_torch_does(robust_graph: Path, changed: dict) -> None:
    """A growing budget (eps_start, eps_ramp): the runner writes each step's eps_t into the graph's eps input; the
    same steps used and cloaks within the parity tolerance as the torch loop, and the ramp changes the cloaks."""
    from comcloak.attacks.budget import budget_used
    from comcloak.engine.backends.onnxruntime_runner import OnnxRuntimeRunner

    ensemble = _ensemble()
    x0, goal = _batch(ensemble)
    base = attack_config("mim", 8 / 255, steps=6, alpha=3 / 255, eot=EOT, **changed)
    config = dataclasses.replace(base, eps_start=2 / 255, eps_ramp=4)
    with TorchRunner(ensemble, None, config) as runner:
        reference = runner.infer_result(x0, goal)
    with OnnxRuntimeRunner(robust_graph, config) as runner:
        ours = runner.infer_result(x0, goal)
    with OnnxRuntimeRunner(robust_graph, base) as runner:
        constant = runner.infer_result(x0, goal)
    assert ours.steps_used.tolist() == reference.steps_used.tolist()
    assert (ours.images - reference.images).abs().max() <= 2 * config.alpha + 1e-6
    assert ((ours.images - reference.images).abs() > 1e-5).float().mean() < 0.01
    factors = 1.0
    if config.budget == "texture":
        from comcloak.attacks.budget import texture_budget

        factors = texture_budget(x0, config)
    bound = config.eps * budget_used(config, ours.steps_used).float()[:, None, None, None] * factors
    assert ((ours.images - x0).abs() <= bound + 1e-6).all()
    assert not torch.equal(constant.images, ours.images)


@pytest.mark.gpu
def test_the_captured_loop_grows_the_budget_as_the_eager_loop_does() -> None:
    """torch-cudagraph captures each step's bound (a constant of the captured ops): the eager loop's cloaks, and a
    ramp longer than the steps keeps every change below eps."""
    from comcloak.attacks.budget import budget_at

    ensemble = _ensemble().cuda()
    x0, goal = (tensor.cuda() for tensor in _batch(ensemble))
    config = attack_config("mim", 8 / 255, steps=4, alpha=3 / 255, eps_start=2 / 255, eps_ramp=6)
    with TorchRunner(ensemble, None, config) as runner:
        eager = runner.infer_result(x0, goal).images
    with CudaGraphTorchRunner(ensemble, None, config, torch.device("cuda")) as runner:
        captured = runner.infer(x0, goal)
    assert (captured - eager).abs().max() <= 2 * config.alpha + 1e-6
    assert ((captured - eager).abs() > 1e-5).float().mean() < 0.01
    assert (captured - x0).abs().max() <= config.eps * budget_at(config, 3) + 1e-6 < config.eps


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_grows_the_budget_in_its_captured_loop(tmp_path: Path) -> None:
    """TensorRT's captured loop fills each step's eps_t with the step: a ramp longer than the steps keeps every
    change below eps, and the cloaks match ONNX Runtime's within the parity tolerance."""
    from comcloak.attacks.budget import budget_at
    from comcloak.engine.backends.tensorrt_runner import TensorRTRunner
    from comcloak.export import OnnxFromTorch

    ensemble = _ensemble()
    x0, goal = _batch(ensemble)
    path = tmp_path / "step.onnx"
    OnnxFromTorch(ensemble, None, HEIGHT, WIDTH, path, spec=StepSpec("ce"))()
    config = attack_config("mim", 8 / 255, steps=4, alpha=3 / 255, eps_start=2 / 255, eps_ramp=6)
    with TorchRunner(ensemble, None, config) as runner:
        reference = runner.infer_result(x0, goal).images
    with TensorRTRunner(path, config, device="cuda", cache_dir=tmp_path) as runner:
        ours = runner.infer(x0.cuda(), goal.cuda()).cpu()
    assert (ours - reference).abs().max() <= 2 * config.alpha + 1e-3
    assert (ours - x0).abs().max() <= config.eps * budget_at(config, 3) + 1e-6 < config.eps
