"""Block-transform draws (issue 26: BSR, block shuffle and rotation, and SIA's moving transforms): the index map is
a permutation drawn per seed, off by default (the other draws unchanged), the hand-built step equals autograd, the
export passes its self-check without Scatter, ONNX Runtime equals the torch step and the torch loop, and the CLI
options reach the configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from step_models import HEIGHT, WIDTH, tiny_stand_in, tiny_surrogates

from comcloak.attacks import attack_config
from comcloak.attacks.blocks import SIA_TRANSFORMS, block_shuffle_index, permute_pixels, structure_invariant_index
from comcloak.attacks.config import EotSettings
from comcloak.attacks.eot import BLOCK_INPUTS, DRAW_INPUTS, Draw, DrawSampler
from comcloak.attacks.loop import descent_gradient
from comcloak.attacks.settings import AttackConfigError
from comcloak.engine.cloaker import Cloaker
from comcloak.export import OnnxFromTorch, read_export_metadata, tensorrt_op_violations
from comcloak.export.gradient import RobustAttackStep, goal_weights, traceable_through
from comcloak.export.onnx_export import GRADIENT_TOLERANCE, INPUT_NAMES, StepLayout, relative_error

EOT = EotSettings(draws=3, view_size=32, through_rate=0.6, bsr_rate=0.7, bsr_blocks=4, sia_rate=0.6, sia_blocks=3)


def test_the_block_shuffle_is_a_permutation_drawn_per_seed() -> None:
    draw = DrawSampler(EOT, 1, seed=3).sample(4, HEIGHT, WIDTH)
    index, inverse = draw.blocks.reshape(-1, 32 * 32).long(), draw.blocks_inverse.reshape(-1, 32 * 32).long()
    every = torch.arange(32 * 32).expand_as(index)
    assert torch.equal(index.sort(dim=1).values, every)  # every pixel exactly once
    assert torch.equal(index.gather(1, inverse), every) and torch.equal(inverse.gather(1, index), every)
    assert (index != every).any(dim=1).any() and (index == every).all(dim=1).any()  # some draws shuffled, some not
    again = DrawSampler(EOT, 1, seed=3).sample(4, HEIGHT, WIDTH)
    assert all(torch.equal(a, b) for a, b in zip(draw.tensors().values(), again.tensors().values()))
    other = DrawSampler(EOT, 1, seed=4).sample(4, HEIGHT, WIDTH)
    assert not torch.equal(draw.blocks, other.blocks)


def test_the_on_device_sampler_draws_permutations_too() -> None:
    """The CUDA-graph and TensorRT runners' sampler (the device's default generator, here the CPU's)."""
    torch.manual_seed(0)
    draw = DrawSampler.on_device(EOT, 1, "cpu").sample(3, HEIGHT, WIDTH)
    index = draw.blocks.reshape(-1, 32 * 32).long()
    assert torch.equal(index.sort(dim=1).values, torch.arange(32 * 32).expand_as(index))
    assert torch.equal(index.gather(1, draw.blocks_inverse.reshape(-1, 32 * 32).long()), torch.arange(32 * 32)
                       .expand_as(index))


def test_a_block_moves_whole_and_turns_a_quarter() -> None:
    view = torch.arange(16.0).reshape(1, 1, 4, 4)
    index = block_shuffle_index(4, 2, torch.tensor([[3, 1, 2, 0]]), torch.tensor([[0, 0, 0, 1]]))
    out = permute_pixels(view, index)[0, 0]
    assert torch.equal(out[:2, :2], view[0, 0, 2:, 2:])  # block 3 moved to block 0
    assert torch.equal(out[2:, 2:], torch.rot90(view[0, 0, :2, :2]))  # block 0 to block 3, a quarter turn


def test_sia_moves_pixels_within_each_block_for_any_grid() -> None:
    view = torch.arange(25.0).reshape(1, 1, 5, 5)  # 5 = 2 + 3 (round(5 / 2) = 2): blocks of two sizes
    kinds = torch.arange(len(SIA_TRANSFORMS))[None, :4]
    out = permute_pixels(view, structure_invariant_index(5, 2, kinds, torch.full((1, 4), 0.5)))[0, 0]
    original = view[0, 0]
    assert torch.equal(out[:2, :2], original[:2, :2])  # identity
    assert torch.equal(out[:2, 2:], original[:2, 2:].flip(0))  # vertical flip
    assert torch.equal(out[2:, :2], original[2:, :2].flip(1))  # horizontal flip
    assert torch.equal(out[2:, 2:], original[2:, 2:].flip(0, 1))  # half turn
    rolled = permute_pixels(view, structure_invariant_index(5, 1, torch.tensor([[4]]), torch.tensor([[0.4]])))
    assert torch.equal(rolled[0, 0], original.roll(-2, 0))  # a vertical roll by 0.4 x 5 rows
    generator = torch.Generator().manual_seed(0)
    for blocks in (1, 3, 7):
        kinds = torch.randint(len(SIA_TRANSFORMS), (4, blocks * blocks), generator=generator)
        index = structure_invariant_index(32, blocks, kinds, torch.rand(4, blocks * blocks, generator=generator))
        assert torch.equal(index.sort(dim=1).values, torch.arange(32 * 32).expand_as(index))


def test_bsr_is_off_by_default_and_leaves_the_other_draws_as_they_were() -> None:
    assert EotSettings().bsr_rate == 0 and EotSettings().sia_rate == 0 and not EotSettings().block_transforms
    plain = dataclasses.replace(EOT, bsr_rate=0.0, sia_rate=0.0)
    before = DrawSampler(plain, 1, seed=5).sample(2, HEIGHT, WIDTH)
    assert before.blocks is None and tuple(before.tensors()) == DRAW_INPUTS
    after = DrawSampler(EOT, 1, seed=5).sample(2, HEIGHT, WIDTH)
    assert all(torch.equal(getattr(before, name), getattr(after, name)) for name in DRAW_INPUTS)
    with pytest.raises(AttackConfigError, match="must divide view_size"):
        EotSettings(draws=1, view_size=32, bsr_rate=0.5, bsr_blocks=3)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_the_bsr_step_is_the_eager_reference(loss: str) -> None:
    """float64: the step's hand-built VJP (a gather by the inverse map) is autograd's gradient of the torch loop."""
    members = [member.double() for member in tiny_surrogates(2)]
    stand_in = tiny_stand_in().double()
    generator = torch.Generator().manual_seed(11)
    x = torch.rand(3, 3, HEIGHT, WIDTH, generator=generator, dtype=torch.float64)
    goal = torch.randint(1000, (3, 2), generator=generator)
    config = attack_config("mim", 5 / 255, 2, loss=loss, eot=EOT)
    draw = DrawSampler(EOT, 1, seed=7).sample(3, HEIGHT, WIDTH)
    draw = Draw(**{name: value.double() for name, value in draw.tensors().items()})
    _, reference = descent_gradient(members, stand_in, x, goal, config, draw)
    step = RobustAttackStep(members, [traceable_through(stand_in, HEIGHT, WIDTH)], EOT.draws, loss,
                            EOT.coded_draws).double()
    scalars = [torch.tensor([value], dtype=torch.float64) for value in (config.eps, config.alpha, 0.0)]
    w = goal_weights(goal, 1000, False, torch.float64)
    with torch.no_grad():
        budget = torch.ones(3, 1, HEIGHT, WIDTH, dtype=torch.float64)  # the uniform budget
        _, m_next, _, _ = step(x, x, torch.zeros_like(x), w, *scalars, budget, *draw.tensors().values())
    normalised = reference / reference.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    torch.testing.assert_close(m_next, normalised, rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def bsr_export(export_step) -> tuple[Path, OnnxFromTorch]:
    """test_robust_step.py's export (tests/export/conftest.py) with block-transform draws."""
    return export_step(EOT)


def test_the_bsr_export_passes_its_self_check_with_the_maps_as_inputs(bsr_export) -> None:
    onnx = pytest.importorskip("onnx")
    path, loader = bsr_export
    assert loader.report.check.passed
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == [*INPUT_NAMES, *DRAW_INPUTS, *BLOCK_INPUTS]
    assert tensorrt_op_violations(model) == []
    assert "GatherElements" in loader.report.ops and not any(op.startswith("Scatter") for op in loader.report.ops)
    assert StepLayout.from_metadata(read_export_metadata(path)).blocks


def test_onnxruntime_runs_the_bsr_step_as_torch_does(bsr_export) -> None:
    ort = pytest.importorskip("onnxruntime")
    path, _ = bsr_export
    step = RobustAttackStep(tiny_surrogates(2), [traceable_through(tiny_stand_in(), HEIGHT, WIDTH)], EOT.draws,
                            "margin", EOT.coded_draws)
    generator = torch.Generator().manual_seed(2)
    x0 = torch.rand(2, 3, HEIGHT, WIDTH, generator=generator)
    x = (x0 + 0.01 * torch.randn(x0.shape, generator=generator)).clamp(0, 1)
    w = goal_weights(torch.randint(1000, (2, 2), generator=generator), 1000, targeted=False)
    draw = DrawSampler(EOT, 1, seed=2).sample(2, HEIGHT, WIDTH)
    budget = 0.5 + torch.rand(2, 1, HEIGHT, WIDTH, generator=generator)  # a per-pixel budget, as --budget texture
    inputs = (x, x0, torch.zeros_like(x0), w, torch.tensor([4 / 255]), torch.tensor([1 / 255]), torch.tensor([0.0]),
              budget, *draw.tensors().values())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [*INPUT_NAMES, *DRAW_INPUTS, *BLOCK_INPUTS]
    got = session.run(None, {name: value.numpy() for name, value in zip(names, inputs)})
    with torch.no_grad():
        expected = step(*inputs)
    for name, value, reference in zip(("m_next", "logits", "loss"), got[1:], expected[1:]):
        assert relative_error(value, reference) <= GRADIENT_TOLERANCE, name


def test_a_bsr_cloaker_gives_the_same_cloaks_on_torch_and_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    photos = [(np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8) for seed in range(2)]
    settings = dict(strength="balanced", classifier="tiny_classifier", steps=3, attack_size=40, device="cpu",
                    cache_dir=tmp_path, bsr_rate=0.5, sia_rate=0.5)
    torch_cloaker = Cloaker(backend="torch", **settings)
    assert torch_cloaker.config.eot.bsr_rate == 0.5 and torch_cloaker.config.eot.draws > 0
    torch_cloaks = torch_cloaker.cloak_photos(photos)
    onnx_cloaks = Cloaker(backend="onnxruntime", **settings).cloak_photos(photos)
    for ours, reference in zip(onnx_cloaks, torch_cloaks):
        assert np.mean(ours.cloaked != reference.cloaked) < 0.01
    plain = Cloaker(backend="torch", **{**settings, "bsr_rate": 0.0, "sia_rate": 0.0}).cloak_photos(photos)
    assert any((a.cloaked != b.cloaked).any() for a, b in zip(plain, torch_cloaks))  # the draws change the cloak
    (exported,) = tmp_path.glob("step-*.onnx")
    assert read_export_metadata(exported)["blocks"] == "1"


def test_a_graph_without_bsr_is_refused_for_a_bsr_attack(bsr_export) -> None:
    from comcloak.engine.backends.onnxruntime_runner import OnnxRuntimeRunner
    from comcloak.engine.backends.registry import BackendUnavailableError

    path, _ = bsr_export
    config = dataclasses.replace(attack_config("mim", 5 / 255, loss="margin"),
                                 eot=dataclasses.replace(EOT, bsr_rate=0.0, sia_rate=0.0))
    with pytest.raises(BackendUnavailableError, match="exported with block-transform draws"):
        OnnxRuntimeRunner(path, config).activate()


def test_the_cli_option_reaches_the_configuration() -> None:
    from comcloak.cli.evaluate import strength_configs
    from comcloak.cli.main import build_parser
    from comcloak.cli.options import attack_config_from_args

    args = build_parser().parse_args(["cloak", "in.png", "-o", "out", "--strength", "balanced", "--bsr-rate", "0.5",
                                      "--bsr-blocks", "4", "--sia-rate", "0.3", "--sia-blocks", "5"])
    config = attack_config_from_args(args)
    assert (config.eot.bsr_rate, config.eot.bsr_blocks, config.eot.sia_rate, config.eot.sia_blocks) == (0.5, 4, 0.3, 5)
    args = build_parser().parse_args(["eval", "photos", "--protocol", "platform", "--strengths", "balanced",
                                      "--bsr-rate", "0.25"])
    assert [c.eot.bsr_rate for c in strength_configs(args, args.eps)] == [0.25]


def test_a_face_cloak_refuses_block_transforms() -> None:
    from comcloak.attacks.faces.settings import FaceCloakConfig

    whole = dict(draws=2, rescale_range=(1.0, 1.0), whole_image_rate=1.0, flip_rate=0.0)
    FaceCloakConfig(attack_config("mim", 5 / 255, eot=EotSettings(**whole)))
    with pytest.raises(AttackConfigError, match="do not move blocks"):
        FaceCloakConfig(attack_config("mim", 5 / 255, eot=EotSettings(**whole, sia_rate=0.5)))
