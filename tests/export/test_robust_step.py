"""The robust attack's step as forward ops (RobustAttackStep), its ONNX export and the exported backends running it:
the hand-built backward pass equals autograd on the eager reference, the export passes its calibrated self-check,
ONNX Runtime equals the torch step at any batch, and a robust Cloaker gives the same cloaks on both backends."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from step_models import HEIGHT, WIDTH, tiny_stand_in, tiny_surrogates

from comcloak.attacks import attack_config
from comcloak.attacks.config import EotSettings
from comcloak.attacks.eot import DRAW_INPUTS, Draw, DrawSampler
from comcloak.attacks.loop import descent_gradient
from comcloak.attacks.loss_registry import loss_names
from comcloak.attacks.through import ExpectationThrough
from comcloak.engine.cloaker import Cloaker
from comcloak.export import OnnxFromTorch, read_export_metadata, tensorrt_op_violations
from comcloak.export.gradient import RobustAttackStep, goal_weights, traceable_through
from comcloak.export.onnx_export import GRADIENT_TOLERANCE, INPUT_NAMES, StepLayout, relative_error

EOT = EotSettings(draws=3, view_size=32, through_rate=0.6)  # 2 of 3 draws coded


def _stand_ins(count: int) -> list[torch.nn.Module]:
    return [tiny_stand_in() for _ in range(count)]


def _through(stand_ins: list[torch.nn.Module]) -> torch.nn.Module:
    if not stand_ins:
        return torch.nn.Identity()
    return stand_ins[0] if len(stand_ins) == 1 else ExpectationThrough(stand_ins)


@pytest.mark.parametrize("loss", loss_names())
@pytest.mark.parametrize(("surrogates", "stand_ins"), [(1, 0), (1, 1), (2, 2)])
@pytest.mark.parametrize("targeted", [False, True])
def test_the_robust_step_is_the_eager_reference(loss: str, surrogates: int, stand_ins: int, targeted: bool) -> None:
    """float64, where no rounding can flip a mask: the step's normalised gradient is the reference's."""
    members = [member.double() for member in tiny_surrogates(surrogates)]
    modules = [module.double() for module in _stand_ins(stand_ins)]
    generator = torch.Generator().manual_seed(surrogates + 3 * stand_ins)
    x = torch.rand(3, 3, HEIGHT, WIDTH, generator=generator, dtype=torch.float64)
    goal = torch.randint(1000, (3, surrogates), generator=generator)
    config = attack_config("mim", 5 / 255, 2, targeted=targeted, loss=loss, eot=EOT)
    draw = DrawSampler(EOT, stand_ins, seed=7).sample(3, HEIGHT, WIDTH)
    draw = Draw(**{name: value.double() for name, value in draw.tensors().items()})
    _, reference = descent_gradient(members, _through(modules), x, goal, config, draw)
    step = RobustAttackStep(members, [traceable_through(m, HEIGHT, WIDTH) for m in modules], EOT.draws, loss,
                            EOT.coded_draws).double()
    scalars = [torch.tensor([value], dtype=torch.float64) for value in (config.eps, config.alpha, 0.0)]
    w = goal_weights(goal, 1000, targeted, torch.float64)
    with torch.no_grad():
        _, m_next, logits, _ = step(x, x, torch.zeros_like(x), w, *scalars, torch.ones_like(x[:, :1]),
                                    *draw.tensors().values())
    normalised = reference / reference.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)  # an image past
    # the margin has no gradient
    torch.testing.assert_close(m_next, normalised, rtol=0, atol=1e-9)
    assert logits.shape == (3, surrogates, EOT.draws, 1000)  # each draw's (graph format 6: per-photo stopping)


@pytest.fixture(scope="module")
def robust_export(export_step) -> tuple[Path, OnnxFromTorch]:
    """Two surrogates, one stand-in, the margin loss (tests/export/conftest.py)."""
    return export_step(EOT)


def test_the_robust_export_passes_its_self_checks_with_the_draws_as_inputs(robust_export) -> None:
    onnx = pytest.importorskip("onnx")
    path, loader = robust_export
    assert loader.report.check.passed
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == [*INPUT_NAMES, *DRAW_INPUTS]
    assert tensorrt_op_violations(model) == []
    ops = loader.report.ops
    assert "MatMul" in ops and not any(op.startswith(("Scatter", "GridSample")) for op in ops)
    layout = StepLayout.from_metadata(read_export_metadata(path))
    assert layout == StepLayout(surrogates=2, draws=3, stand_ins=1, view_size=32, loss="margin", coded_draws=2)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_runs_the_robust_step_as_torch_does(robust_export, batch: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    path, _ = robust_export
    step = RobustAttackStep(tiny_surrogates(2), [traceable_through(tiny_stand_in(), HEIGHT, WIDTH)], EOT.draws,
                            "margin", EOT.coded_draws)
    generator = torch.Generator().manual_seed(batch)
    x0 = torch.rand(batch, 3, HEIGHT, WIDTH, generator=generator)
    x = (x0 + 0.01 * torch.randn(x0.shape, generator=generator)).clamp(0, 1)
    w = goal_weights(torch.randint(1000, (batch, 2), generator=generator), 1000, targeted=False)
    draw = DrawSampler(EOT, 1, seed=batch).sample(batch, HEIGHT, WIDTH)
    budget = 0.25 + 1.75 * torch.rand(batch, 1, HEIGHT, WIDTH, generator=generator)  # a per-pixel budget
    inputs = (x, x0, torch.zeros_like(x0), w, torch.tensor([4 / 255]), torch.tensor([1 / 255]), torch.tensor([0.0]),
              budget, *draw.tensors().values())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: value.numpy() for name, value in zip([*INPUT_NAMES, *DRAW_INPUTS], inputs)})
    with torch.no_grad():
        expected = step(*inputs)
    for name, value, reference in zip(("m_next", "logits", "loss"), got[1:], expected[1:]):
        assert value.shape == tuple(reference.shape), name
        assert relative_error(value, reference) <= GRADIENT_TOLERANCE, name
    # The per-pixel bound and step: x_next agrees wherever the two gradients' signs do (all but rare near-zeros).
    assert (torch.from_numpy(got[0]) - expected[0]).abs().gt(1e-6).float().mean() < 1e-3


def test_a_robust_ensemble_cloaker_gives_the_same_cloaks_on_torch_and_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    photos = [(np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8) for seed in range(3)]
    settings = dict(strength="balanced", classifier="tiny_classifier,tiny_classifier_b", steps=3, attack_size=40,
                    device="cpu", cache_dir=tmp_path)
    torch_cloaks = Cloaker(backend="torch", **settings).cloak_photos(photos)
    onnx_cloaker = Cloaker(backend="onnxruntime", **settings)
    assert onnx_cloaker.config.eot.draws == 2 and onnx_cloaker.config.loss == "margin"
    onnx_cloaks = onnx_cloaker.cloak_photos(photos)
    for ours, reference in zip(onnx_cloaks, torch_cloaks):
        assert ours.clean_labels == reference.clean_labels and len(ours.clean_labels) == 2
        # Exact here; a sign of m within float noise of 0 could differ by one step on other inputs.
        assert np.mean(ours.cloaked != reference.cloaked) < 0.01
    exported = list(tmp_path.glob("step-*.onnx"))
    assert len(exported) == 1 and read_export_metadata(exported[0])["draws"] == "2"


def test_an_exported_graph_for_other_draws_is_refused(robust_export) -> None:
    from comcloak.engine.backends.onnxruntime_runner import OnnxRuntimeRunner
    from comcloak.engine.backends.registry import BackendUnavailableError

    path, _ = robust_export
    config = dataclasses.replace(attack_config("mim", 5 / 255, loss="margin"), eot=EotSettings(draws=4))
    with pytest.raises(BackendUnavailableError, match="exported for 3 draws and the margin loss; the attack needs 4"):
        OnnxRuntimeRunner(path, config).activate()


def test_export_strength_writes_the_step_the_presets_cloaker_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """``comcloak export --strength balanced`` writes the robust step the onnxruntime Cloaker exports for that preset
    (same inputs, draws, loss, step rule and graph), which the runner then accepts for the preset's configuration.
    Tiny networks stand in for the preset's real surrogates."""
    pytest.importorskip("onnxruntime")
    from comcloak.attacks import presets
    from comcloak.cli.main import main
    from comcloak.engine.backends.onnxruntime_runner import OnnxRuntimeRunner

    tiny = {name: dataclasses.replace(preset, classifier="tiny_classifier,tiny_classifier_b", attack_size=40)
            for name, preset in presets.PRESETS.items()}
    monkeypatch.setattr(presets, "PRESETS", tiny)
    output = tmp_path / "balanced.onnx"
    assert main(["export", "-o", str(output), "--strength", "balanced"]) == 0
    assert "TensorRT op whitelist ok" in capsys.readouterr().out
    metadata = read_export_metadata(output)
    assert (metadata["strength"], metadata["draws"], metadata["height"], metadata["width"]) == (
        "balanced", "2", "40", "40")
    cloaker = Cloaker(strength="balanced", backend="onnxruntime", device="cpu", cache_dir=tmp_path / "cache")
    cloaker.cloak_photos([(np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)])
    (cached,) = (tmp_path / "cache").glob("step-*.onnx")
    onnx = pytest.importorskip("onnx")
    ours, theirs = onnx.load(str(output)), onnx.load(str(cached))
    assert [node.op_type for node in ours.graph.node] == [node.op_type for node in theirs.graph.node]
    # The same graph description; the CLI's file also names its preset and the stand-in's codec.
    assert {key: value for key, value in metadata.items() if key not in ("strength", "codec")} == \
        read_export_metadata(cached)
    runner = OnnxRuntimeRunner(output, cloaker.config)
    runner.activate()  # the graph's draws, loss and step rule are the preset's: not refused
    runner.deactivate()


def test_export_strength_refuses_a_classifier_or_stand_in_beside_it(tmp_path: Path, capsys) -> None:
    from comcloak.cli.main import main

    assert main(["export", "-o", str(tmp_path / "x.onnx"), "--strength", "balanced", "--through", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--classifier, --classifier-weights and --through do not apply" in err
    assert not (tmp_path / "x.onnx").exists()
