"""DiffJPEG against the real libjpeg-turbo JPEG that Pillow writes, plus gradients, shapes and argument checks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from comcloak.codecs import Jpeg
from comcloak.codecs.diffjpeg import CHROMA_TABLE, LUMA_TABLE, DiffJPEG, diff_round, quality_scaling, scaled_table


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def to_255(x: torch.Tensor) -> np.ndarray:
    return x.detach()[0].permute(1, 2, 0).double().numpy() * 255.0


@pytest.mark.parametrize("quality", [1, 10, 25, 49, 50, 51, 75, 95, 100])
def test_quantisation_tables_equal_the_ones_pillow_writes(quality: int) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 200)).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as written:
        tables = written.quantization  # natural order, 0 = luminance, 1 = chrominance
    assert list(tables[0]) == scaled_table(LUMA_TABLE, quality)
    assert list(tables[1]) == scaled_table(CHROMA_TABLE, quality)
    module = DiffJPEG(quality)
    assert module.luma_table.flatten().int().tolist() == list(tables[0])
    assert module.chroma_table.flatten().int().tolist() == list(tables[1])


def test_quality_scaling_matches_libjpeg() -> None:
    assert [quality_scaling(q) for q in (1, 10, 25, 49, 50, 75, 100)] == [5000, 500, 200, 102, 100, 50, 0]


# Measured (torch 2.13 CPU, Pillow 13.0 / libjpeg-turbo, 4:2:0), MAE on the 0-255 scale over the 224x224 photos
# chelsea / coffee / astronaut:
#   DiffJPEG vs Pillow JPEG   q25: 1.09 / 1.17 / 1.19   q50: 1.02 / 1.07 / 1.12   q75: 1.01 / 1.02 / 1.06
#   original vs Pillow JPEG   q25: 5.97 / 6.67 / 7.28   q50: 4.66 / 5.22 / 5.62   q75: 3.68 / 4.20 / 4.35
# The ~1.0 floor is the float model against libjpeg's integer pipeline (8-bit YCbCr samples, integer DCT,
# 8-bit RGB output): even at q100 the two differ by 0.64. Bounds: 1.5 (>= 25% headroom over the worst case)
# and at most 0.4x the identity's error (worst measured ratio 0.28, at q75).
MAE_BOUND = 1.5
IDENTITY_RATIO_BOUND = 0.4


@pytest.mark.parametrize("quality", [25, 50, 75])
def test_close_to_real_jpeg_on_photos(photos_224: dict[str, np.ndarray], quality: int) -> None:
    module = DiffJPEG(quality)
    for name, image in photos_224.items():
        real = Jpeg(quality).apply(image).astype(np.float64)
        with torch.no_grad():
            approx = to_255(module(to_tensor(image)))
        model_mae = float(np.abs(approx - real).mean())
        identity_mae = float(np.abs(image - real).mean())
        assert model_mae < MAE_BOUND, (name, quality, model_mae)
        assert model_mae < IDENTITY_RATIO_BOUND * identity_mae, (name, quality, model_mae, identity_mae)


@pytest.mark.parametrize("subsampling", ["444", "422"])
def test_other_subsamplings_track_real_jpeg(photos_224: dict[str, np.ndarray], subsampling: str) -> None:
    image = photos_224["chelsea"]
    real = Jpeg(50, subsampling).apply(image).astype(np.float64)
    with torch.no_grad():
        approx = to_255(DiffJPEG(50, subsampling)(to_tensor(image)))
    model_mae = float(np.abs(approx - real).mean())
    assert model_mae < MAE_BOUND and model_mae < IDENTITY_RATIO_BOUND * float(np.abs(image - real).mean())


def test_gradient_flows(photos_224: dict[str, np.ndarray]) -> None:
    x = to_tensor(photos_224["coffee"][:64, :80]).requires_grad_()
    target = torch.rand_like(x)
    loss = ((DiffJPEG(50)(x) - target) ** 2).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.5 and x.grad.abs().sum() > 0


@pytest.mark.parametrize("subsampling", ["420", "422", "444"])
@pytest.mark.parametrize("shape", [(97, 131), (1, 1), (16, 16), (8, 33)])
def test_any_size_round_trips_in_shape(shape: tuple[int, int], subsampling: str) -> None:
    x = torch.rand(2, 3, *shape)
    y = DiffJPEG(75, subsampling)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_odd_size_matches_real_jpeg(photos_224: dict[str, np.ndarray]) -> None:
    # Edge-replication padding is what libjpeg does too, so a non-multiple-of-16 crop stays as close as a full one.
    image = np.ascontiguousarray(photos_224["astronaut"][:97, :131])
    real = Jpeg(50).apply(image).astype(np.float64)
    with torch.no_grad():
        approx = to_255(DiffJPEG(50)(to_tensor(image)))
    assert float(np.abs(approx - real).mean()) < MAE_BOUND


def test_batch_items_are_independent() -> None:
    x = torch.rand(3, 3, 24, 40)
    module = DiffJPEG(50)
    batched = module(x)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], module(x[i : i + 1]))


def test_higher_quality_is_closer_to_the_input(photos_224: dict[str, np.ndarray]) -> None:
    x = to_tensor(photos_224["chelsea"])
    with torch.no_grad():
        err = [float((DiffJPEG(q)(x) - x).abs().mean()) for q in (10, 50, 90, 100)]
    assert err == sorted(err, reverse=True), err


def test_diff_round_is_exact_at_integers_with_cubic_gradient() -> None:
    x = torch.tensor([-2.0, -0.25, 0.0, 0.4, 1.0, 2.5], requires_grad=True)
    y = diff_round(x)
    torch.testing.assert_close(y[[0, 2, 4]], torch.tensor([-2.0, 0.0, 1.0]))
    torch.testing.assert_close(y[3], torch.tensor(0.4**3))
    y.sum().backward()
    frac = x.detach() - torch.round(x.detach())
    torch.testing.assert_close(x.grad, 3 * frac**2)


@pytest.mark.parametrize("quality", [0, 101, 50.0, True, "50"])
def test_rejects_bad_quality(quality: object) -> None:
    with pytest.raises(ValueError, match="quality must be an integer in 1..100"):
        DiffJPEG(quality)  # type: ignore[arg-type]


def test_rejects_bad_subsampling_and_input() -> None:
    with pytest.raises(ValueError, match="subsampling must be one of 444, 422, 420"):
        DiffJPEG(50, "4:2:0")
    with pytest.raises(ValueError, match="NCHW RGB"):
        DiffJPEG(50)(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="NCHW RGB"):
        DiffJPEG(50)(torch.rand(1, 1, 16, 16))


def test_tables_are_non_persistent_buffers() -> None:
    module = DiffJPEG(50)
    assert module.state_dict() == {} and list(module.parameters()) == []
    assert "quality=50" in repr(module)


def test_package_exports_diffjpeg_lazily() -> None:
    import comcloak.codecs

    assert comcloak.codecs.DiffJPEG is DiffJPEG
    with pytest.raises(AttributeError):
        _ = comcloak.codecs.NoSuchThing  # type: ignore[attr-defined]
