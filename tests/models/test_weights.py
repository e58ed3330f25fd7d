from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from comcloak.models import WeightsError, load_state_dict_file, load_weights, save_safetensors


def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    sd = _small().state_dict()
    path = save_safetensors(sd, tmp_path / "w.safetensors")
    assert _same(sd, load_state_dict_file(path))


def test_safetensors_detected_by_magic_not_extension(tmp_path: Path) -> None:
    sd = _small().state_dict()
    save_safetensors(sd, tmp_path / "w.safetensors")
    (tmp_path / "w.bin").write_bytes((tmp_path / "w.safetensors").read_bytes())
    assert _same(sd, load_state_dict_file(tmp_path / "w.bin"))


def test_fp16_save_casts_floats_only(tmp_path: Path) -> None:
    model = _small()
    path = save_safetensors(model.state_dict(), tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = load_state_dict_file(path)
    assert loaded["0.weight"].dtype == torch.float16
    assert loaded["1.num_batches_tracked"].dtype == torch.int64
    fresh = _small()
    nn.init.zeros_(fresh[0].weight)
    load_weights(fresh, path)  # fp16 file into an fp32 model: values cast on copy
    assert fresh[0].weight.dtype == torch.float32
    torch.testing.assert_close(fresh[0].weight, model[0].weight, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_pth_with_common_wrappers(tmp_path: Path, wrapper: str | None) -> None:
    sd = _small().state_dict()
    obj = sd if wrapper is None else {wrapper: sd, "epoch": 3}
    torch.save(obj, tmp_path / "w.pth")
    assert _same(sd, load_state_dict_file(tmp_path / "w.pth"))


def test_pth_dataparallel_prefix_is_stripped(tmp_path: Path) -> None:
    sd = _small().state_dict()
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "dp.pt")
    assert _same(sd, load_state_dict_file(tmp_path / "dp.pt"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found") as info:
        load_state_dict_file(tmp_path / "nope.safetensors")
    assert "\n" not in str(info.value) and "nope.safetensors" in str(info.value)


@pytest.mark.parametrize("name", ["garbage.pth", "garbage.safetensors", "garbage"])
def test_garbage_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x00not a weights file" * 50)
    with pytest.raises(WeightsError, match="cannot decode") as info:
        load_state_dict_file(tmp_path / name)
    assert "\n" not in str(info.value)


class _Payload:
    """Pickling this class would need full unpickling: weights_only must refuse it."""


def test_pickle_with_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1), "x": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="cannot decode"):
        load_state_dict_file(tmp_path / "evil.pth")


def test_non_tensor_entries_are_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1), "note": "hello"}, tmp_path / "mixed.pth")
    with pytest.raises(WeightsError, match="not a tensor"):
        load_state_dict_file(tmp_path / "mixed.pth")


def test_load_weights_reports_mismatches_in_one_line() -> None:
    model = _small()
    sd = dict(model.state_dict())
    del sd["0.weight"]
    sd["extra.weight"] = torch.zeros(1)
    sd["3.bias"] = torch.zeros(5)
    with pytest.raises(WeightsError) as info:
        load_weights(_small(), sd)
    msg = str(info.value)
    assert "\n" not in msg
    assert "missing keys (0.weight)" in msg
    assert "unexpected keys (extra.weight)" in msg
    assert "3.bias (5,) vs model (2,)" in msg


def test_load_weights_tolerates_absent_num_batches_tracked() -> None:
    # Old torchvision files predate BatchNorm's num_batches_tracked buffer.
    sd = {k: v for k, v in _small().state_dict().items() if not k.endswith("num_batches_tracked")}
    load_weights(_small(), sd)


def test_saving_weights_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import comcloak.models.weights as weights

    target = tmp_path / "w.safetensors"
    save_safetensors({"a": torch.ones(2)}, target)
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(weights, "_st_save_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors({"a": torch.zeros(2)}, target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    assert target.stat().st_mode & 0o044  # readable by others, as any new file: weights are shared and packaged
