from __future__ import annotations

import pytest
import torch

import comcloak.models as M
from comcloak.models.padding import same_pad_layer

PARAMS = {"comodel": 6_957_219, "comodel_tiny": 109_847}


@pytest.mark.parametrize("name", ["comodel", "comodel_tiny"])
@pytest.mark.parametrize("size", [(224, 224), (64, 96)])
def test_output_shape_equals_input_shape(name: str, size: tuple[int, int]) -> None:
    model = M.create_model(name)
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, *size)


@pytest.mark.parametrize("name", ["comodel", "comodel_tiny"])
def test_parameter_count(name: str) -> None:
    # comodel: 6.96 M parameters, 10.1 GFLOPs at 224x224; comodel_tiny: 110 k, 0.226 GFLOPs.
    model = M.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in model.modules())


def test_keras_same_padding_rule() -> None:
    assert M.same_padding(4, 1) == (1, 2)  # stride 1, even kernel: extra pixel after
    assert M.same_padding(4, 2, 224) == (1, 1)
    assert M.same_padding(3, 2, 224) == (0, 1)
    assert M.same_padding(5, 2, 224) == (1, 2)
    assert M.same_padding(3, 2, 7) == (1, 1)  # odd input: TF pads less
    assert M.same_padding(1, 2, 224) == (0, 0)
    pad, conv_pad = same_pad_layer(4, 1)
    assert pad is not None and pad.padding == (1, 2, 1, 2) and conv_pad == 0


def test_stem_conv_pads_one_before_two_after() -> None:
    model = M.ComModel(width=0.125)
    conv = model.stem.conv
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        conv.bias.zero_()
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # tap (1, 1) reads the pixel itself: one row/col of padding before
        conv.weight[1, 0, 0, 0] = 1.0  # tap (0, 0) reads the pixel up-left: zeros on the first row/col
        conv.weight[2, 0, 3, 3] = 1.0  # tap (3, 3) reads 2 down-right: two zero rows/cols after
        y = model.stem(x)
    assert y.shape[-2:] == (8, 8)
    torch.testing.assert_close(y[0, 0], x[0, 0])
    torch.testing.assert_close(y[0, 1, 1:, 1:], x[0, 0, :-1, :-1])
    assert y[0, 1, 0].abs().sum() == 0 and y[0, 1, :, 0].abs().sum() == 0
    torch.testing.assert_close(y[0, 2, :-2, :-2], x[0, 0, 2:, 2:])
    assert y[0, 2, -2:].abs().sum() == 0 and y[0, 2, :, -2:].abs().sum() == 0


def test_encoder_and_decoder_sizes() -> None:
    model = M.ComModel(width=0.125)
    x = torch.rand(1, 3, 64, 96)
    sizes = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[-2:])))
        for n in ("x1", "x2", "x3", "x4", "x5", "up4", "up3", "up2", "up1")
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert sizes == {
        "x1": (32, 48),
        "x2": (16, 24),
        "x3": (8, 12),
        "x4": (4, 6),
        "x5": (4, 6),
        "up4": (8, 12),
        "up3": (16, 24),
        "up2": (32, 48),
        "up1": (64, 96),
    }


def test_pretrained_path_round_trip(tmp_path) -> None:
    src = M.comodel_tiny()
    path = M.save_safetensors(src.state_dict(), tmp_path / "com.safetensors")
    dst = M.create_model("comodel_tiny", pretrained=path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    with pytest.raises(M.WeightsError, match="pretrained=<path"):
        M.comodel(pretrained=True)
