"""ComModel training: it learns, it is deterministic, a resumed run equals an uninterrupted one, and the default
architecture follows the codec. Tiny on purpose: 64 px views of the bundled sample photos, a few dozen steps."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comcloak.codecs import parse_codec
from comcloak.codecs.pairs import PairSet, SimulatedPairs, ViewSettings, held_out_views
from comcloak.models import TransformComModel, TransformComModelConfig, training
from comcloak.models.training import (
    TrainConfig,
    calibrate_init_quality,
    comodel_mae,
    default_comodel_config,
    identity_mae,
    load_checkpoint,
    new_comodel,
    train_comodel,
)
from comcloak.samples import sample_folder

SAMPLES = sample_folder()
TINY_TC = {"block": 8, "chroma_subsampling": 2, "init_quality": 25, "refine_width": 4}


@pytest.fixture(scope="module")
def photo_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The four bundled samples as small 96x80 PNGs (coffee.png is the one ``split_held_out`` holds out)."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        with Image.open(SAMPLES / f"{name}.jpg") as image:
            image.convert("RGB").resize((96, 80), Image.Resampling.LANCZOS).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


@pytest.fixture(scope="module")
def jpeg25(photo_paths: list[Path]) -> tuple[PairSet, PairSet]:
    """(training views, held-out views) of jpeg:25 at 64x64."""
    train = SimulatedPairs([p for p in photo_paths if p.stem != "coffee"], "jpeg:25",
                           ViewSettings(size=64, views_per_photo=2, seed=0)).build()
    return train, held_out_views([p for p in photo_paths if p.stem == "coffee"], "jpeg:25", size=64)


def fast(**overrides: object) -> TrainConfig:
    settings = {"steps": 8, "batch": 2, "crop": 32, "validate_every": 4, "checkpoint_every": 0}
    return TrainConfig(**{**settings, **overrides})


def test_training_from_scratch_lowers_loss_and_val_mae(jpeg25: tuple[PairSet, PairSet]) -> None:
    # The paper architecture starts far from the codec (a transform-coding one starts at it), so a few steps show
    # the loop learning.
    train, val = jpeg25
    model = new_comodel("comodel", {"width": 0.125}, seed=0)
    before = comodel_mae(model, val.originals, val.compressed)
    reports = []
    result = train_comodel(model, train, val, fast(steps=6, lr=1e-2, validate_every=3), codec="jpeg:25",
                           progress=reports.append)
    assert [entry.step for entry in result.history] == [3, 6] and reports == result.history
    assert result.history[-1].loss < 0.8 * result.history[0].loss
    assert result.val_mae == result.history[-1].val_mae < 0.75 * before
    assert result.identity_mae == pytest.approx(identity_mae(val)) and result.identity_mae > 3
    assert result.history[-1].lr == pytest.approx(1e-2 * 0.01)  # the cosine ends at final_lr_fraction
    assert not model.training


def test_same_seed_same_weights(jpeg25: tuple[PairSet, PairSet]) -> None:
    train, val = jpeg25
    states = []
    for _ in range(2):
        model = new_comodel("comodel_tc", TINY_TC, seed=3)
        train_comodel(model, train, val, fast(steps=3, validate_every=3, seed=3), codec="jpeg:25")
        states.append(model.state_dict())
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    assert not torch.equal(new_comodel("comodel_tc", TINY_TC, seed=4).refine[0].weight,
                           new_comodel("comodel_tc", TINY_TC, seed=3).refine[0].weight)


def test_resumed_run_equals_an_uninterrupted_one(
    jpeg25: tuple[PairSet, PairSet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = jpeg25
    config = fast(steps=4, validate_every=2, checkpoint_every=2)
    checkpoint = tmp_path / "run.ckpt"
    halfway = tmp_path / "halfway.ckpt"
    save = training.save_checkpoint

    def keep_halfway(path, model, optimizer, step, *args) -> None:
        save(path, model, optimizer, step, *args)
        if step == 2:  # what an interruption after step 2 would have left on disk
            shutil.copy(path, halfway)

    monkeypatch.setattr(training, "save_checkpoint", keep_halfway)
    whole = new_comodel("comodel_tc", TINY_TC, seed=0)
    whole_result = train_comodel(whole, train, val, config, codec="jpeg:25", checkpoint=checkpoint)
    monkeypatch.undo()
    assert load_checkpoint(halfway)["step"] == 2 and load_checkpoint(checkpoint)["step"] == 4
    assert sorted(tmp_path.iterdir()) == sorted([checkpoint, halfway])  # no temp files left behind

    resumed = new_comodel("comodel_tc", TINY_TC, seed=0)
    result = train_comodel(resumed, train, val, config, codec="jpeg:25", checkpoint=halfway, resume=True)
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    assert [entry.step for entry in result.history] == [2, 4]
    assert result.history[0] == whole_result.history[0]  # the first report comes from the checkpoint
    assert result.val_mae == pytest.approx(whole_result.val_mae, abs=1e-6)

    # Resuming a finished run changes nothing; resume without a checkpoint file starts afresh.
    again = train_comodel(new_comodel("comodel_tc", TINY_TC, seed=0), train, val, config, codec="jpeg:25",
                          checkpoint=checkpoint, resume=True)
    torch.testing.assert_close(again.model.refine[0].weight, whole.refine[0].weight, rtol=0, atol=0)
    fresh = train_comodel(new_comodel("comodel_tc", TINY_TC, seed=0), train, val, fast(steps=1), codec="jpeg:25",
                          checkpoint=tmp_path / "absent.ckpt", resume=True)
    assert [entry.step for entry in fresh.history] == [1]


def test_mismatched_checkpoint_is_refused(jpeg25: tuple[PairSet, PairSet], tmp_path: Path) -> None:
    train, val = jpeg25
    checkpoint = tmp_path / "run.ckpt"
    train_comodel(new_comodel("comodel_tc", TINY_TC, seed=0), train, val, fast(steps=1, checkpoint_every=1),
                  codec="jpeg:25", checkpoint=checkpoint)
    assert checkpoint.is_file()
    cases = [
        (TINY_TC, fast(steps=1, checkpoint_every=1, lr=2e-3), "jpeg:25", "different settings"),
        (TINY_TC, fast(steps=1, checkpoint_every=1), "jpeg:50", "is for comodel_tc .* on 'jpeg:25'"),
        ({**TINY_TC, "refine_width": 8}, fast(steps=1, checkpoint_every=1), "jpeg:25", "not comodel_tc"),
    ]
    for arch_config, config, codec, message in cases:
        with pytest.raises(ValueError, match=message):
            train_comodel(new_comodel("comodel_tc", arch_config, seed=0), train, val, config, codec=codec,
                          checkpoint=checkpoint, resume=True)
    not_a_checkpoint = tmp_path / "other.ckpt"
    torch.save({"format": "something else"}, not_a_checkpoint)
    with pytest.raises(ValueError, match="not a comcloak training checkpoint"):
        train_comodel(new_comodel("comodel_tc", TINY_TC, seed=0), train, val, fast(), codec="jpeg:25",
                      checkpoint=not_a_checkpoint, resume=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"batch": True}, "batch must be a positive integer"),
        ({"crop": 40}, "crop must be a multiple of 16"),
        ({"lr": 0.0}, "need lr > 0"),
        ({"final_lr_fraction": 1.5}, "0 < final_lr_fraction <= 1"),
        ({"checkpoint_every": -1}, "checkpoint_every must be >= 0"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_train_config_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_views_must_fit_crop_and_grid(jpeg25: tuple[PairSet, PairSet]) -> None:
    train, val = jpeg25
    model = new_comodel("comodel_tc", TINY_TC, seed=0)
    with pytest.raises(ValueError, match="crop 128 is larger than the training views"):
        train_comodel(model, train, val, fast(crop=128))
    odd = PairSet(val.originals[:, :40, :40].copy(), val.compressed[:, :40, :40].copy(), val.names)
    with pytest.raises(ValueError, match="validation views must be a multiple of 16 px, got 40"):
        train_comodel(model, train, odd, fast())


# ------------------------------------------------------------------------------------------------ architecture


@pytest.fixture(scope="module")
def jpeg50(photo_paths: list[Path]) -> PairSet:
    return held_out_views(photo_paths, "jpeg:50", size=64)


@pytest.mark.parametrize(
    ("spec", "block", "subsampling", "calibrated"),
    [
        ("jpeg:50", 8, 2, False),
        ("jpeg:50:444", 8, 1, False),
        ("webp:50", 4, 2, True),
        ("jp2:20", 8, 1, True),
        ("resize:64+jpeg:85", 8, 1, True),
        (None, 8, 1, True),  # platform pairs: no codec known
    ],
)
def test_default_architecture_follows_the_codec(
    jpeg50: PairSet, monkeypatch: pytest.MonkeyPatch, spec: str | None, block: int, subsampling: int, calibrated: bool
) -> None:
    calls = []

    def fake_calibration(pairs: PairSet, block: int, subsampling: int) -> int:
        calls.append((block, subsampling))
        return 42

    monkeypatch.setattr(training, "calibrate_init_quality", fake_calibration)
    codec = parse_codec(spec) if spec else None
    config = default_comodel_config(codec, jpeg50)
    assert (config["block"], config["chroma_subsampling"], config["refine_width"]) == (block, subsampling, 32)
    assert config["init_quality"] == (42 if calibrated else codec.quality)
    assert calls == ([(block, subsampling)] if calibrated else [])
    assert default_comodel_config(codec, jpeg50, tiny=True)["refine_width"] == 4
    TransformComModelConfig(**config)  # a valid architecture


def test_plain_jpeg_starts_at_its_own_quality(jpeg25: tuple[PairSet, PairSet]) -> None:
    # 25 is not on the calibration grid; the codec's own tables are several times closer than its neighbours'.
    train, _ = jpeg25
    config = default_comodel_config(parse_codec("jpeg:25"), train)
    assert config["init_quality"] == 25
    own = comodel_mae(TransformComModel(TransformComModelConfig(8, 2, 25, 0)), train.originals, train.compressed)
    nearest = comodel_mae(TransformComModel(TransformComModelConfig(8, 2, 30, 0)), train.originals, train.compressed)
    assert own < 0.5 * nearest


def test_calibration_recovers_the_jpeg_quality(jpeg50: PairSet) -> None:
    assert calibrate_init_quality(jpeg50, 8, 2) == 50


def test_comodel_mae_of_doing_nothing_is_the_identity_mae(jpeg50: PairSet) -> None:
    assert comodel_mae(torch.nn.Identity(), jpeg50.originals, jpeg50.compressed) == pytest.approx(
        identity_mae(jpeg50))
    assert comodel_mae(torch.nn.Identity(), jpeg50.compressed, jpeg50.compressed) == 0.0
    assert np.isclose(identity_mae(jpeg50), np.abs(jpeg50.originals.astype(float) - jpeg50.compressed).mean())
