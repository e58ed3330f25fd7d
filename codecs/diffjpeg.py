"""Differentiable JPEG (Shin & Song 2017, "JPEG-resistant adversarial images"), the attack-through baseline.

The pipeline mirrors libjpeg's baseline path as Pillow drives it: JFIF RGB->YCbCr, chroma subsampling by 2x2
averaging, 8x8 block DCT, quantisation with the IJG tables scaled by quality exactly as ``jpeg_set_quality``
does, then the decoder's dequantisation, inverse DCT, "fancy" (bilinear) chroma upsampling and YCbCr->RGB.
The one non-differentiable step, rounding the quantised coefficients, is replaced by Shin & Song's cubic
approximation ``round(x) + (x - round(x))**3``: exact at integers, with a non-zero gradient elsewhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# IJG standard tables (ITU-T T.81 Annex K), natural (row-major) order, as in libjpeg's jcparam.c.
LUMA_TABLE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_TABLE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip

# JFIF full-range BT.601 colour conversion (libjpeg jccolor.c / jdcolor.c), on the 0..255 scale.
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)

# Chroma subsampling factor (vertical, horizontal) per mode.
_SUBSAMPLING: dict[str, tuple[int, int]] = {"444": (1, 1), "422": (1, 2), "420": (2, 2)}


def quality_scaling(quality: int) -> int:
    """libjpeg's ``jpeg_quality_scaling``: IJG quality 1..100 -> percentage applied to the standard tables."""
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def scaled_table(table: tuple[int, ...], quality: int) -> list[int]:
    """One quantisation table scaled as ``jpeg_add_quant_table`` does with force_baseline (entries in 1..255)."""
    scale = quality_scaling(quality)
    return [min(max((value * scale + 50) // 100, 1), 255) for value in table]


def dct_matrix(size: int = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal ``size``-point DCT-II matrix (computed in float64); for 8, D @ block @ D.T is JPEG's 2-D forward
    DCT (T.81 A.3.3)."""
    k = torch.arange(size, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(size, dtype=torch.float64).unsqueeze(0)
    matrix = torch.cos((2 * n + 1) * k * math.pi / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix.to(dtype)


def diff_round(x: torch.Tensor) -> torch.Tensor:
    """Shin & Song's differentiable rounding: the value of round(x) plus a cubic term with gradient 3*(x-round(x))^2."""
    rounded = torch.round(x).detach()
    return rounded + (x - rounded) ** 3


class DiffJPEG(nn.Module):
    """Differentiable approximation of baseline JPEG at IJG ``quality`` with chroma ``subsampling``.

    ``forward`` takes an NCHW float tensor in [0, 1] of any height and width and returns the same shape. The image
    is padded by edge replication to whole MCUs (16x16 for 4:2:0), as libjpeg does, and cropped back afterwards.
    No Python branches depend on tensor values, only on shapes.
    """

    def __init__(self, quality: int, subsampling: str = "420") -> None:
        super().__init__()
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"DiffJPEG quality must be an integer in 1..100, got {quality!r}")
        if subsampling not in _SUBSAMPLING:
            raise ValueError(f"DiffJPEG subsampling must be one of {', '.join(_SUBSAMPLING)}, got {subsampling!r}")
        self.quality = quality
        self.subsampling = subsampling
        self._factor = _SUBSAMPLING[subsampling]
        # Buffers (not parameters): they follow .to(device) but are never trained; not persistent, as they are
        # fully determined by the constructor arguments.
        self.register_buffer("dct", dct_matrix(), persistent=False)
        self.register_buffer(
            "luma_table", torch.tensor(scaled_table(LUMA_TABLE, quality), dtype=torch.float32).view(8, 8), False
        )
        self.register_buffer(
            "chroma_table", torch.tensor(scaled_table(CHROMA_TABLE, quality), dtype=torch.float32).view(8, 8), False
        )
        self.register_buffer("rgb_to_ycbcr", torch.tensor(_RGB_TO_YCBCR, dtype=torch.float32), persistent=False)
        self.register_buffer("ycbcr_to_rgb", torch.tensor(_YCBCR_TO_RGB, dtype=torch.float32), persistent=False)

    def extra_repr(self) -> str:
        return f"quality={self.quality}, subsampling={self.subsampling!r}"

    def _blocks_roundtrip(self, plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """DCT, quantise, differentiably round, dequantise and inverse-DCT one (N, C, H, W) plane, H and W % 8 == 0."""
        n, c, h, w = plane.shape
        dct = self.dct.to(plane.dtype)
        q = table.to(plane.dtype).view(1, 1, 1, 8, 1, 8)
        blocks = (plane - 128.0).reshape(n, c, h // 8, 8, w // 8, 8)
        coef = torch.einsum("ki,ncaibj,lj->ncakbl", dct, blocks, dct)
        coef = diff_round(coef / q) * q
        pixels = torch.einsum("ki,ncakbl,lj->ncaibj", dct, coef, dct)
        # libjpeg's IDCT range-limits each sample to 0..255 before colour conversion.
        return (pixels.reshape(n, c, h, w) + 128.0).clamp(0.0, 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DiffJPEG expects an NCHW RGB tensor (N, 3, H, W), got shape {tuple(x.shape)}")
        height, width = x.shape[-2], x.shape[-1]
        fy, fx = self._factor
        # Pad to whole MCUs (8 * subsampling factor) with edge replication, like libjpeg's expand_*_edge.
        pad_h, pad_w = (-height) % (8 * fy), (-width) % (8 * fx)
        x = F.pad(x * 255.0, (0, pad_w, 0, pad_h), mode="replicate")

        ycc = torch.einsum("ij,njhw->nihw", self.rgb_to_ycbcr.to(x.dtype), x)
        luma = ycc[:, :1]
        chroma = ycc[:, 1:] + 128.0
        if fy * fx > 1:
            chroma = F.avg_pool2d(chroma, kernel_size=(fy, fx))

        luma = self._blocks_roundtrip(luma, self.luma_table)
        chroma = self._blocks_roundtrip(chroma, self.chroma_table)
        if fy * fx > 1:
            # Bilinear with half-pixel centres and edge clamping is libjpeg's "fancy" triangle upsampling.
            chroma = F.interpolate(chroma, scale_factor=(fy, fx), mode="bilinear", align_corners=False)

        rgb = torch.einsum("ij,njhw->nihw", self.ycbcr_to_rgb.to(x.dtype), torch.cat([luma, chroma - 128.0], dim=1))
        return (rgb[:, :, :height, :width] / 255.0).clamp(0.0, 1.0)
