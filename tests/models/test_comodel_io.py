"""ComModel files: the architecture in the safetensors header, headerless paper files, shipped lookup by codec,
and ``--through comodel:...`` on top of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comcloak.attacks import ThroughSpecError, make_through
from comcloak.attacks.through import ComModelThrough, resolve_comodel
from comcloak.models import (
    ComModel,
    TransformComModel,
    TransformComModelConfig,
    WeightsError,
    comodel_io,
    create_model,
    read_safetensors_metadata,
    save_safetensors,
)
from comcloak.models.comodel_io import (
    build_comodel,
    comodel_architecture,
    comodel_codec,
    list_shipped_comodels,
    load_comodel,
    save_comodel,
    shipped_comodel_path,
    shipped_file_name,
)
from comcloak.samples import sample_folder

SAMPLES = sample_folder()


def trained_looking_tc(config: TransformComModelConfig | None = None, seed: int = 0) -> TransformComModel:
    """A comodel_tc whose refiner is not zero (as after training), so a round trip exercises every tensor."""
    torch.manual_seed(seed)
    model = TransformComModel(config or TransformComModelConfig(8, 2, 30, 4))
    if model.refine is not None:
        with torch.no_grad():
            model.refine[-1].weight.normal_(0.0, 0.02)
            model.refine[-1].bias.normal_(0.0, 0.01)
    return model.eval()


def test_save_fp16_and_load_round_trip(tmp_path: Path) -> None:
    model = trained_looking_tc()
    path = save_comodel(model, tmp_path / "tc.safetensors", codec="jpeg:30", dtype=torch.float16,
                        extra={"comcloak.train.steps": "7"})
    header = read_safetensors_metadata(path)
    assert header["comcloak.arch"] == "comodel_tc"
    assert json.loads(header["comcloak.config"]) == model.config.as_dict()
    assert header["comcloak.train.steps"] == "7" and header["format"] == "pt"
    assert comodel_codec(path) == "jpeg:30"

    loaded = load_comodel(path)
    assert isinstance(loaded, TransformComModel) and not loaded.training
    assert loaded.config == model.config
    assert all(parameter.dtype == torch.float32 for parameter in loaded.parameters())
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    # fp16 weights: tiny everywhere, except where a coefficient lands on the other side of a rounding boundary.
    assert (expected - got).abs().mean() < 2e-3
    assert (expected - got).abs().max() < 0.1


def test_block4_model_round_trips(tmp_path: Path) -> None:
    model = trained_looking_tc(TransformComModelConfig(4, 1, 20, 0))
    path = save_comodel(model, tmp_path / "b4.safetensors", codec="jp2:20")
    loaded = load_comodel(path)
    assert loaded.config == TransformComModelConfig(4, 1, 20, 0)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("with_header", [False, True])
def test_paper_comodel_loads_with_or_without_header(tmp_path: Path, with_header: bool) -> None:
    torch.manual_seed(0)
    model = ComModel(width=0.125).eval()
    path = tmp_path / "paper.safetensors"
    if with_header:
        save_comodel(model, path, codec="jpeg:50")
        assert comodel_codec(path) == "jpeg:50"
    else:
        save_safetensors(model.state_dict(), path)  # a plain state dict: no architecture in the header
        assert comodel_codec(path) is None
    loaded = load_comodel(path)
    assert isinstance(loaded, ComModel) and loaded.width == 0.125
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_torch_checkpoint_of_a_paper_comodel_loads(tmp_path: Path) -> None:
    model = ComModel(width=0.125)
    path = tmp_path / "paper.pt"
    torch.save(model.state_dict(), path)
    assert read_safetensors_metadata(path) == {}
    assert isinstance(load_comodel(path), ComModel)


def test_not_a_comodel(tmp_path: Path) -> None:
    path = save_safetensors(create_model("tiny_classifier").state_dict(), tmp_path / "classifier.safetensors")
    with pytest.raises(WeightsError, match="is not a ComModel"):
        load_comodel(path)
    with pytest.raises(WeightsError, match="weights file not found"):
        load_comodel(tmp_path / "missing.safetensors")


def test_bad_headers(tmp_path: Path) -> None:
    state = trained_looking_tc().state_dict()
    unknown = save_safetensors(state, tmp_path / "a.safetensors", metadata={"comcloak.arch": "unet"})
    with pytest.raises(WeightsError, match="unknown ComModel architecture 'unet'"):
        load_comodel(unknown)
    invalid = save_safetensors(state, tmp_path / "b.safetensors", metadata={
        "comcloak.arch": "comodel_tc", "comcloak.config": json.dumps({"block": 5})})
    with pytest.raises(WeightsError, match="invalid comodel_tc configuration"):
        load_comodel(invalid)
    unreadable = save_safetensors(state, tmp_path / "c.safetensors", metadata={
        "comcloak.arch": "comodel_tc", "comcloak.config": "{not json"})
    with pytest.raises(WeightsError, match="unreadable comcloak.config header"):
        load_comodel(unreadable)
    misfit = save_safetensors(state, tmp_path / "d.safetensors", metadata={
        "comcloak.arch": "comodel_tc", "comcloak.config": json.dumps({"refine_width": 8})})
    with pytest.raises(WeightsError, match="does not fit comodel_tc"):
        load_comodel(misfit)


def test_architecture_helpers() -> None:
    assert comodel_architecture(ComModel(width=0.125)) == ("comodel", {"width": 0.125})
    arch, config = comodel_architecture(TransformComModel())
    assert arch == "comodel_tc" and TransformComModelConfig(**config) == TransformComModelConfig()
    with pytest.raises(TypeError, match="not a ComModel"):
        comodel_architecture(torch.nn.Identity())
    assert isinstance(build_comodel("comodel_tc", {"block": 4}), TransformComModel)
    with pytest.raises(WeightsError, match="invalid comodel configuration"):
        build_comodel("comodel", {"depth": 3})


def test_safetensors_metadata_helpers(tmp_path: Path) -> None:
    path = save_safetensors({"w": torch.ones(2)}, tmp_path / "w.safetensors", metadata={"k": "v"})
    assert read_safetensors_metadata(path) == {"format": "pt", "k": "v"}
    plain = save_safetensors({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    assert read_safetensors_metadata(plain) == {"format": "pt"}
    with pytest.raises(WeightsError, match="weights file not found"):
        read_safetensors_metadata(tmp_path / "nothing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(WeightsError, match="cannot decode weights file"):
        read_safetensors_metadata(corrupt)


# ------------------------------------------------------------------------------------------------ shipped lookup


def test_shipped_file_names() -> None:
    assert shipped_file_name("jpeg:50") == "comodel-jpeg-50.safetensors"
    assert shipped_file_name("JPEG:50") == "comodel-jpeg-50.safetensors"
    assert shipped_file_name("resize:2048+jpeg:85") == "comodel-resize-2048_jpeg-85.safetensors"


@pytest.fixture()
def weights_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    save_comodel(trained_looking_tc(), folder / shipped_file_name("jpeg:50"), codec="jpeg:50", dtype=torch.float16)
    # Not shipped: no codec in the header, and a file whose name does not follow the pattern.
    save_comodel(trained_looking_tc(), folder / "comodel-unknown.safetensors")
    save_comodel(trained_looking_tc(), folder / "other.safetensors", codec="webp:75")
    return folder


def test_shipped_lookup_by_codec(weights_dir: Path) -> None:
    expected = weights_dir / "comodel-jpeg-50.safetensors"
    assert list_shipped_comodels(weights_dir) == {"jpeg:50": expected}
    assert shipped_comodel_path("JPEG:50", weights_dir=weights_dir) == expected
    assert shipped_comodel_path("jpeg:50:420", weights_dir=weights_dir) == expected
    with pytest.raises(WeightsError, match=r"no shipped ComModel for codec 'webp:75'; shipped: jpeg:50"):
        shipped_comodel_path("webp:75", weights_dir=weights_dir)
    with pytest.raises(WeightsError, match="comodel:gif:3"):
        shipped_comodel_path("gif:3", weights_dir=weights_dir)


def test_no_shipped_weights_at_all(tmp_path: Path) -> None:
    assert list_shipped_comodels(tmp_path / "absent") == {}
    with pytest.raises(WeightsError, match="shipped: none"):
        shipped_comodel_path("jpeg:50", weights_dir=tmp_path)


# ------------------------------------------------------------------------------------------------ --through


def test_through_comodel_tc_file_runs_on_any_size(tmp_path: Path) -> None:
    path = save_comodel(trained_looking_tc(), tmp_path / "tc.safetensors", codec="jpeg:30", dtype=torch.float16)
    through = make_through(f"comodel:{path}")
    assert isinstance(through, ComModelThrough) and isinstance(through.comodel, TransformComModel)
    assert not any(parameter.requires_grad for parameter in through.parameters())
    with Image.open(SAMPLES / "coffee.jpg") as image:
        photo = np.array(image.convert("RGB").resize((70, 50), Image.Resampling.LANCZOS))
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0  # 3x50x70: padded to 64x80 inside
    y = through(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() < 0.05  # JPEG-like at quality 30, not garbage from the padding


def test_through_comodel_by_codec_uses_the_shipped_file(weights_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(comodel_io, "WEIGHTS_DIR", weights_dir)
    assert resolve_comodel("jpeg:50") == weights_dir / "comodel-jpeg-50.safetensors"
    assert isinstance(make_through("comodel:JPEG:50").comodel, TransformComModel)
    with pytest.raises(ThroughSpecError, match="no shipped ComModel for codec 'webp:13'; shipped: jpeg:50"):
        make_through("comodel:webp:13")


def test_through_comodel_unknown_argument(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(comodel_io, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ThroughSpecError, match="no such weights file, and not a codec spec"):
        make_through("comodel:nonexistent-thing")
    classifier = save_safetensors(create_model("tiny_classifier").state_dict(), tmp_path / "c.safetensors")
    with pytest.raises(ThroughSpecError, match="is not a ComModel"):
        make_through(f"comodel:{classifier}")
