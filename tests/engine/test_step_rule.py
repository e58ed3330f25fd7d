"""The step rule (issue 26, ``step_rule``): ``scaled`` moves each pixel in proportion to the momentum with the sign
step's L2 length; torch and ONNX Runtime give the same cloaks with it (draws, texture budget, stopping), the exported
graph records it and a graph of the other rule is refused, it keys the settings hash only when on, and the face-only
cloak refuses it (tiny networks, small photos, few steps)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from comcloak.attacks import attack_config
from comcloak.attacks.loop import attack_update, run_attack
from comcloak.attacks.presets import preset_config
from comcloak.engine.cloaker import Cloaker, CloakerConfigError
from comcloak.kernels import attack_update_reference, step_direction

sys.path.insert(0, str(Path(__file__).parent))
from test_budget_backends import half_textured  # noqa: E402 - the texture tests' photos

TINY = dict(classifier="tiny_classifier,tiny_classifier_b", steps=3, attack_size=40, device="cpu",
            step_rule="scaled")


def test_the_scaled_direction_has_the_sign_steps_length_and_follows_the_momentum() -> None:
    generator = torch.Generator().manual_seed(0)
    momentum = torch.randn(3, 3, 9, 11, generator=generator) * torch.tensor([1e-4, 1.0, 1e3]).view(-1, 1, 1, 1)
    momentum[0, 0, 0, :4] = 0.0  # zeros stay still, and do not count in the sign's length
    scaled = step_direction(momentum, "scaled")
    sign_length = momentum.sign().flatten(1).norm(dim=1)
    torch.testing.assert_close(scaled.flatten(1).norm(dim=1), sign_length)  # whatever the momentum's scale
    ratio = scaled / momentum
    finite = momentum != 0
    for image in range(3):  # one positive factor per image
        values = ratio[image][finite[image]]
        torch.testing.assert_close(values, values[0].expand_as(values))
        assert values[0] > 0
    assert (scaled[~finite] == 0).all()
    assert torch.equal(step_direction(momentum, "sign"), momentum.sign())
    assert torch.equal(step_direction(torch.zeros(2, 3, 4, 4), "scaled"), torch.zeros(2, 3, 4, 4))  # no NaN
    with pytest.raises(ValueError, match="step rule"):
        step_direction(momentum, "l2")


def test_the_loops_update_takes_the_configs_rule() -> None:
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 8, 8, generator=generator)
    momentum, gradient = torch.randn(2, 2, 3, 8, 8, generator=generator)
    lower, upper = (x0 - 6 / 255).clamp_min(0), (x0 + 6 / 255).clamp_max(1)
    config = attack_config("mim", 6 / 255, steps=3, step_rule="scaled")
    got = attack_update(x0, momentum, gradient, config, lower, upper, fused=True)  # the kernel steps by the sign only
    expected = attack_update_reference(x0, momentum, gradient, lower, upper, config.alpha, 1.0, "scaled")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    signed = attack_update(x0, momentum, gradient, replace(config, step_rule="sign"), lower, upper)
    assert not torch.equal(got[0], signed[0])
    assert (got[0] >= lower).all() and (got[0] <= upper).all()


def test_scaled_steps_change_less_than_sign_steps_within_the_same_bound() -> None:
    from comcloak.models import create_model

    torch.manual_seed(0)
    classifier = create_model("tiny_classifier").eval().requires_grad_(False)
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = classifier(x0).argmax(1)
    changes = {}
    for rule in ("sign", "scaled"):
        config = attack_config("mim", 8 / 255, steps=6, step_rule=rule)
        cloak = run_attack(classifier, x0, labels, config)
        change = cloak - x0
        assert change.abs().max() <= config.eps + 1e-6
        changes[rule] = float(change.square().mean().sqrt())
    assert changes["scaled"] < 0.8 * changes["sign"]  # less energy for the same L-inf bound


@pytest.mark.parametrize("settings", [dict(strength="paper"), dict(strength="balanced"),
                                      dict(strength="balanced", budget="texture", stop_after=1, stop_margin=0.0,
                                           label_view="attack", steps=4)],
                         ids=["paper", "balanced", "texture-stopping"])
def test_onnxruntime_gives_the_torch_cloaks_with_scaled_steps(tmp_path: Path, settings: dict) -> None:
    pytest.importorskip("onnxruntime")
    photos = [half_textured(48, 64, seed) for seed in range(2)]
    options = {**TINY, "cache_dir": tmp_path, **settings}
    torch_results = Cloaker(backend="torch", **options).cloak_photos(photos)
    onnx_results = Cloaker(backend="onnxruntime", **options).cloak_photos(photos)
    signed = Cloaker(backend="torch", **{**options, "step_rule": "sign"}).cloak_photos(photos)
    for ours, reference in zip(onnx_results, torch_results):
        # Float32 sums in another order move every pixel's scaled step by ~1e-7 (not only where m is near 0, as with
        # the sign), so a few percent of the uint8 outputs round to the neighbouring level; never further.
        difference = np.abs(ours.cloaked.astype(int) - reference.cloaked.astype(int))
        assert difference.max() <= 1 and np.mean(difference > 0) < 0.05
        assert ours.steps_used == reference.steps_used
    # The rule changed the cloaks (a photo safe from the start under stopping keeps its pixels either way).
    assert any(not np.array_equal(ours.cloaked, sign.cloaked) for ours, sign in zip(torch_results, signed))


def test_the_graph_records_its_rule_and_one_of_the_other_rule_is_refused(tmp_path: Path, stale_graph_metadata) -> None:
    pytest.importorskip("onnxruntime")
    from comcloak.engine.backends import exported
    from comcloak.engine.backends.registry import BackendUnavailableError
    from comcloak.export.step_io import StepLayout

    cloaker = Cloaker(backend="onnxruntime", strength="paper", cache_dir=tmp_path, **TINY)
    cloaker.cloak_photos([half_textured(48, 64, 0)])
    graphs = list(tmp_path.glob("step-*.onnx"))
    assert len(graphs) == 1
    metadata = exported.read_export_metadata(graphs[0])
    assert StepLayout.from_metadata(metadata).step_rule == "scaled"
    sign_graphs = StepLayout.from_metadata({k: v for k, v in metadata.items() if k != "step_rule"})
    assert sign_graphs.step_rule == "sign"  # a graph of before the rule existed steps by the sign
    stale_graph_metadata(lambda metadata: {**metadata, "step_rule": "sign"})
    stale = Cloaker(backend="onnxruntime", strength="paper", cache_dir=tmp_path, **TINY)
    with pytest.raises(BackendUnavailableError, match="sign rule"):
        stale.cloak_photos([half_textured(48, 64, 0)])


def test_the_option_reaches_the_config_and_keys_the_settings_hash_only_when_on(capsys) -> None:
    from comcloak.cli.main import build_parser
    from comcloak.cli.options import attack_config_from_args
    from comcloak.codecs.photos import DEFAULT_WRITE
    from comcloak.engine.archive_options import archive_settings

    parser = build_parser()
    cloak = ["cloak", "in.jpg", "-o", "out"]
    assert attack_config_from_args(parser.parse_args([*cloak, "--step-rule", "scaled"])).step_rule == "scaled"
    with pytest.raises(SystemExit):
        parser.parse_args([*cloak, "--step-rule", "l2"])
    assert "--step-rule" in capsys.readouterr().err
    base = replace(preset_config("balanced"), step_rule="sign")
    off = archive_settings(base, "keep", DEFAULT_WRITE, "fp32")
    assert "step_rule" not in off["config"]  # as before the rule existed
    on = archive_settings(replace(base, step_rule="scaled"), "keep", DEFAULT_WRITE, "fp32")
    assert on["config"]["step_rule"] == "scaled" and on != off


def test_the_face_only_cloak_refuses_a_step_rule() -> None:
    with pytest.raises(CloakerConfigError, match="step_rule applies to the objects cloak") as error:
        Cloaker(protect="faces", step_rule="scaled", device="cpu")
    assert "\n" not in str(error.value)
    Cloaker(protect="both", step_rule="scaled", device="cpu")  # the objects cloak takes it
