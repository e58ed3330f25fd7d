"""The transform-coding ComModel: shapes, tracing, an untrained coder that already is JPEG, config validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import fx

import comcloak.models as M
from comcloak.codecs import parse_codec
from comcloak.codecs.diffjpeg import DiffJPEG
from comcloak.models import TransformComModel, TransformComModelConfig
from comcloak.models.training import comodel_mae
from comcloak.samples import sample_folder

SAMPLES = sample_folder()


def sample_view(name: str, size: int = 64) -> np.ndarray:
    """A bundled sample photo resized (whole, Lanczos) to size x size, HWC uint8."""
    with Image.open(SAMPLES / f"{name}.jpg") as image:
        return np.array(image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.parametrize(
    ("block", "subsampling", "height", "width"),
    [(8, 2, 32, 48), (8, 2, 16, 16), (8, 1, 24, 40), (4, 2, 24, 40), (4, 1, 12, 20)],
)
def test_output_shape_on_multiples_of_the_grid(block: int, subsampling: int, height: int, width: int) -> None:
    config = TransformComModelConfig(block, subsampling, 50, 4)
    assert config.size_multiple == block * subsampling
    model = TransformComModel(config).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out.shape == (2, 3, height, width)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("config", [TransformComModelConfig(8, 2, 50, 4), TransformComModelConfig(4, 1, 30, 0)])
def test_symbolic_trace_matches_eager(config: TransformComModelConfig) -> None:
    model = TransformComModel(config).eval()
    traced = fx.symbolic_trace(model)
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "quality"), [("chelsea", 25), ("coffee", 50), ("rocket", 75)])
def test_untrained_coder_is_close_to_real_jpeg(name: str, quality: int) -> None:
    view = sample_view(name)
    compressed = parse_codec(f"jpeg:{quality}").apply(view)
    model = TransformComModel(TransformComModelConfig(8, 2, quality, 0))
    identity = float(np.abs(view.astype(np.float64) - compressed).mean())
    mae = comodel_mae(model, view[None], compressed[None])
    assert identity > 3  # the codec does something at 64x64
    assert mae < 0.5 * identity, (mae, identity)
    # No worse than the differentiable JPEG it starts as (DiffJPEG also range-limits, so allow a little).
    assert mae <= comodel_mae(DiffJPEG(quality), view[None], compressed[None]) + 0.25


def test_untrained_coder_equals_diffjpeg_up_to_the_edges() -> None:
    # Mid-range pixels, so neither DiffJPEG's range limiting nor its final clip comes into play; the outermost rows
    # and columns check the chroma upsampling's edge handling (libjpeg replicates the edge sample).
    x = 0.25 + 0.5 * to_tensor(sample_view("coffee"))
    model = TransformComModel(TransformComModelConfig(8, 2, 50, 0)).eval()
    with torch.no_grad():
        ours, reference = model(x), DiffJPEG(50)(x)
    difference = (ours - reference).abs()
    assert difference.mean() < 1e-3
    edges = torch.cat([difference[..., 0, :], difference[..., -1, :], difference[..., :, 0], difference[..., :, -1]])
    assert edges.mean() < 2e-3, edges.mean()


def test_refiner_starts_at_zero() -> None:
    torch.manual_seed(0)
    refined = TransformComModel(TransformComModelConfig(8, 2, 50, 8)).eval()
    plain = TransformComModel(TransformComModelConfig(8, 2, 50, 0)).eval()
    assert refined.refine is not None and plain.refine is None
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(refined(x), plain(x), rtol=0, atol=0)
        torch.testing.assert_close(refined(x), refined.coded(x), rtol=0, atol=0)


def test_registered_builders() -> None:
    assert {"comodel_tc", "comodel_tc_tiny"} <= set(M.list_models())
    tiny = M.create_model("comodel_tc_tiny", init_quality=30)
    assert tiny.config == TransformComModelConfig(8, 2, 30, 4)
    assert M.create_model("comodel_tc", block=4, refine_width=0).config == TransformComModelConfig(4, 2, 50, 0)
    parameters = sum(p.numel() for p in M.create_model("comodel_tc").parameters())
    assert parameters < 50_000  # light, unlike the paper's 6.96 M


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block": 5}, "block must be one of"),
        ({"chroma_subsampling": 3}, "chroma_subsampling must be one of"),
        ({"init_quality": -1}, "init_quality must be an integer in 0..100"),
        ({"init_quality": 101}, "init_quality must be an integer in 0..100"),
        ({"init_quality": True}, "init_quality must be an integer"),
        ({"init_quality": 50.0}, "init_quality must be an integer"),
        ({"refine_width": -1}, "refine_width must be an integer >= 0"),
        ({"refine_width": True}, "refine_width must be an integer >= 0"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransformComModelConfig(**kwargs)


def test_config_round_trips_through_a_dict() -> None:
    config = TransformComModelConfig(4, 1, 20, 16)
    assert config.as_dict() == {"block": 4, "chroma_subsampling": 1, "init_quality": 20, "refine_width": 16,
                                "refine_levels": 0}
    assert TransformComModelConfig(**config.as_dict()) == config


def test_transparent_start_passes_the_image_through() -> None:
    """init_quality 0: steps of 1/16 leave the coder within a fraction of a grey level of the input."""

    for block, subsampling in ((8, 1), (4, 1)):
        model = TransformComModel(TransformComModelConfig(block, subsampling, 0, 0))
        x = torch.rand(2, 3, 32, 48)
        with torch.no_grad():
            assert (model(x) - x).abs().max().item() * 255 < 0.2


@pytest.mark.parametrize("levels", [1, 3])
def test_unet_refiner_starts_at_zero_and_traces(levels: int) -> None:
    config = TransformComModelConfig(4, 2, 0, 4, levels)
    model = TransformComModel(config)
    assert config.size_multiple == max(8, 2**levels)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), model.coded(x))
    traced = fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
    with pytest.raises(ValueError, match="refine_levels"):
        TransformComModelConfig(refine_levels=5)


def test_continuous_rounding_is_exact_at_integers_continuous_and_monotone() -> None:
    """The attack-time relaxation: equal to round() at integers, meets itself at half-integers, never decreases."""
    model = TransformComModel(TransformComModelConfig(8, 2, 50, 0))
    assert model.rounding == "cubic"
    quantiser = model.luma.quantise
    step = torch.exp(quantiser.log_step).view(-1)[0]
    u = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    z = (u * step).view(1, 1, 1, -1).expand(1, 64, 1, u.numel()).contiguous()

    def rounded() -> torch.Tensor:
        return (quantiser(z) / step)[0, 0, 0]

    cubic = rounded()
    assert model.set_rounding("continuous") is model and model.rounding == "continuous"
    continuous = rounded()
    integers = u == u.round()
    torch.testing.assert_close(continuous[integers], u[integers], rtol=0, atol=1e-5)
    torch.testing.assert_close(cubic[integers], u[integers], rtol=0, atol=1e-5)
    # The cubic jumps by 3/4 of a step at the half-integers; the continuous form moves by at most its slope there.
    assert cubic.diff().max() > 0.7
    assert continuous.diff().max() < 3.5 * 6 / 6000 and continuous.diff().min() >= -1e-9
    with pytest.raises(ValueError, match="rounding must be one of cubic, continuous"):
        model.set_rounding("linear")


def test_rounding_shows_in_the_repr_that_export_caches_hash() -> None:
    from comcloak.export.onnx_export import model_fingerprint

    model = TransformComModel(TransformComModelConfig(8, 2, 50, 4))
    cubic = model_fingerprint(model)
    assert model_fingerprint(model.set_rounding("continuous")) != cubic
    assert model_fingerprint(model.set_rounding("cubic")) == cubic
