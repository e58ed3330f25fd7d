"""Transform-coding ComModel: a light, codec-structured stand-in for a lossy compressor.

The paper's ComModel (``comodel``, 6.96 M parameters, 10.1 GFLOPs) learns everything from scratch; on a 2-core CPU
it does not get near the paper's approximation error within the training budget (docs/DESIGN.md §2, issue 3).
Lossy image codecs share one structure, so this model builds it in and learns its parameters from pairs:

1. colour transform (1x1 conv, initialised to JFIF RGB->YCbCr on the 0..255 scale, luma level-shifted by 128);
2. optional 2x2 chroma subsampling (2x2 averaging conv);
3. a block transform per plane (``block`` x ``block`` conv with stride ``block``, initialised to the 2-D DCT-II);
4. quantisation with a learned step per coefficient and plane (``log_step``), rounded differentiably: with Shin &
   Song's cubic ``round(u) + (u - round(u))**3`` (``"cubic"``, used in training and for the MAE figures) or with
   its continuous form ``round(u) + 4 * (u - round(u))**3`` (``"continuous"``, what attacks differentiate through;
   :meth:`TransformComModel.set_rounding`). Both are exact at integers. The cubic jumps by 3/4 of a step at every
   half-integer, so an attack sees almost nothing of a coefficient it has pushed towards the next level until it
   crosses; the continuous form is monotone with a gradient of up to 3 there, a less accurate imitation (JPEG 50:
   MAE 1.94 instead of 1.02) but a much better path for the attack (targeted MIM after real JPEG 50 on the dev
   photos, MobileNetV2: 82% -> 90%);
5. the inverse block transform (transposed conv), "fancy" triangle chroma upsampling (transposed 4x4 conv, stride
   2, on edge-replicated chroma as libjpeg does) and the inverse colour transform;
6. a residual refiner: three full-resolution 3x3 convs on ``[x, coded]`` whose last layer starts at zero, so an
   untrained model equals the structured coder, and training only has to learn what the structure misses
   (libjpeg's integer DCT and range limiting, VP8's prediction and loop filter, wavelet ringing, ...).

For JPEG the structured part starts as a differentiable JPEG at the codec's quality; for other codecs it starts as a
JPEG-like coder at ``init_quality`` and the steps adapt during training. Everything is an ordinary forward op
(conv, transposed conv, exp, round, mul, add, cat, ReLU), so the model traces with ``torch.fx``. H and W must be
multiples of ``2 * block`` (16 with the defaults); ``ComModelThrough`` pads to that.

The architecture is fully described by :class:`TransformComModelConfig`, which is stored in the safetensors header
of every trained file (``save_comodel`` / ``load_comodel`` in :mod:`comcloak.models.comodel_io`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from comcloak.codecs.diffjpeg import (
    _RGB_TO_YCBCR,
    _YCBCR_TO_RGB,
    CHROMA_TABLE,
    LUMA_TABLE,
    dct_matrix,
    scaled_table,
)

from .registry import register_model
from .weights import PathLike, load_pretrained

logger = logging.getLogger(__name__)

BLOCK_SIZES = (4, 8)
CHROMA_SUBSAMPLING = (1, 2)
# Quantisation step of a transparent start (init_quality 0): rounding then moves a coefficient by at most 1/32 on
# the 0..255 DCT scale, far below one grey level.
TRANSPARENT_STEP = 1.0 / 16.0
MAX_REFINE_LEVELS = 4  # ComModelThrough pads to multiples of 16
# Differentiable roundings, by the coefficient c of round(u) + c * (u - round(u))**3. With c = 4 the pieces meet at
# the half-integers (the value there is u itself).
ROUNDINGS = {"cubic": 1.0, "continuous": 4.0}


@dataclass(frozen=True)
class TransformComModelConfig:
    """Architecture of a :class:`TransformComModel`.

    Args:
        block: block-transform size, 8 (JPEG) or 4 (VP8/WebP-like). Default 8.
        chroma_subsampling: 2 for 4:2:0 codecs (JPEG, WebP), 1 for full-resolution chroma (JPEG 2000). Default 2.
        init_quality: IJG quality (1..100) whose quantisation tables initialise the learned steps, or 0 for a
            transparent start (every step 1/16, so the coder passes the image through until training grows the
            steps; for codecs whose artefacts do not look like block quantisation at the attack resolution).
            Default 50.
        refine_width: channels of the residual refiner; 0 disables it. Default 32.
        refine_levels: half-resolution stages added to the refiner (a small U-Net, channels doubling per level),
            for codecs whose artefacts reach beyond a 7x7 neighbourhood (VP8's loop filter and prediction at low
            quality). 0 keeps the three full-resolution convs. Default 0.
    """

    block: int = 8
    chroma_subsampling: int = 2
    init_quality: int = 50
    refine_width: int = 32
    refine_levels: int = 0

    def __post_init__(self) -> None:
        if self.block not in BLOCK_SIZES:
            raise ValueError(f"block must be one of {BLOCK_SIZES}, got {self.block!r}")
        if self.chroma_subsampling not in CHROMA_SUBSAMPLING:
            raise ValueError(f"chroma_subsampling must be one of {CHROMA_SUBSAMPLING}, got {self.chroma_subsampling!r}")
        if isinstance(self.init_quality, bool) or not isinstance(self.init_quality, int):
            raise ValueError(f"init_quality must be an integer in 0..100, got {self.init_quality!r}")
        if not 0 <= self.init_quality <= 100:
            raise ValueError(f"init_quality must be an integer in 0..100, got {self.init_quality!r}")
        if isinstance(self.refine_width, bool) or not isinstance(self.refine_width, int) or self.refine_width < 0:
            raise ValueError(f"refine_width must be an integer >= 0, got {self.refine_width!r}")
        if isinstance(self.refine_levels, bool) or not isinstance(self.refine_levels, int) or \
                not 0 <= self.refine_levels <= MAX_REFINE_LEVELS:
            raise ValueError(f"refine_levels must be an integer in 0..{MAX_REFINE_LEVELS}, got {self.refine_levels!r}")

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return max(self.block * self.chroma_subsampling, 2**self.refine_levels)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def dct_basis(block: int) -> torch.Tensor:
    """(block², 1, block, block) orthonormal 2-D DCT-II basis: filter (k, l) is the outer product of rows k and l."""
    matrix = dct_matrix(block, torch.float64)
    return torch.einsum("ki,lj->klij", matrix, matrix).reshape(block * block, 1, block, block).float()


def initial_log_steps(table: tuple[int, ...], quality: int, block: int) -> torch.Tensor:
    """log of the IJG ``table`` scaled to ``quality``; for 4x4 blocks every other row and column of the 8x8 table.

    Quality 0 is the transparent start: every step :data:`TRANSPARENT_STEP`.
    """
    if quality == 0:
        return torch.full((1, block * block, 1, 1), math.log(TRANSPARENT_STEP))
    steps = torch.tensor(scaled_table(table, quality), dtype=torch.float32).view(8, 8)
    stride = 8 // block
    return steps[::stride, ::stride].reshape(1, block * block, 1, 1).log()


class _Quantiser(nn.Module):
    """Divide by a learned per-channel step, round differentiably (:data:`ROUNDINGS`), multiply back."""

    def __init__(self, log_step: torch.Tensor) -> None:
        super().__init__()
        self.log_step = nn.Parameter(log_step.clone())
        self.cubic_scale = ROUNDINGS["cubic"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = z * torch.exp(-self.log_step)
        rounded = torch.round(u).detach()
        return (rounded + self.cubic_scale * (u - rounded) ** 3) * torch.exp(self.log_step)

    def extra_repr(self) -> str:
        # In the repr, so that export caches keyed on it (model_fingerprint) tell the roundings apart.
        return f"cubic_scale={self.cubic_scale}"


class _PlaneCoder(nn.Module):
    """Block transform, quantisation and inverse transform of ``planes`` image planes (a grouped conv per plane)."""

    def __init__(self, planes: int, block: int, log_step: torch.Tensor) -> None:
        super().__init__()
        coefficients = block * block
        basis = dct_basis(block).repeat(planes, 1, 1, 1)
        self.analysis = nn.Conv2d(planes, planes * coefficients, block, block, groups=planes, bias=False)
        self.synthesis = nn.ConvTranspose2d(planes * coefficients, planes, block, block, groups=planes, bias=False)
        with torch.no_grad():
            self.analysis.weight.copy_(basis)
            self.synthesis.weight.copy_(basis)
        self.quantise = _Quantiser(log_step.repeat(1, planes, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.quantise(self.analysis(x)))


class _UNetRefiner(nn.Module):
    """Residual refiner with ``levels`` half-resolution stages: a full-resolution conv in and out, skip additions."""

    def __init__(self, width: int, levels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(6, width, 3, padding=1)
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        channels = width
        for _ in range(levels):
            self.down.append(nn.Sequential(nn.Conv2d(channels, 2 * channels, 4, 2, padding=1), nn.ReLU(),
                                           nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.ReLU()))
            self.up.insert(0, nn.ConvTranspose2d(2 * channels, channels, 4, 2, padding=1))
            channels *= 2
        self.fuse = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        skips = []
        for stage in self.down:
            skips.append(y)
            y = stage(y)
        for stage, skip in zip(self.up, reversed(skips)):
            y = torch.relu(stage(y)) + skip
        return self.head(torch.relu(self.fuse(y)))


class TransformComModel(nn.Module):
    """Codec-structured ComModel (module docstring). Input and output RGB NCHW in [0, 1]; output linear (clip at use).

    Example:
        >>> model = TransformComModel(TransformComModelConfig(block=8, chroma_subsampling=2, init_quality=50))
        >>> model(torch.rand(1, 3, 32, 48)).shape
        torch.Size([1, 3, 32, 48])
    """

    def __init__(self, config: TransformComModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TransformComModelConfig()
        forward_colour = torch.tensor(_RGB_TO_YCBCR, dtype=torch.float32)
        inverse_colour = torch.tensor(_YCBCR_TO_RGB, dtype=torch.float32)
        self.colour = nn.Conv2d(3, 3, 1)
        self.inverse_colour = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.colour.weight.copy_((forward_colour * 255.0).view(3, 3, 1, 1))
            self.colour.bias.copy_(torch.tensor([-128.0, 0.0, 0.0]))
            self.inverse_colour.weight.copy_((inverse_colour / 255.0).view(3, 3, 1, 1))
            self.inverse_colour.bias.copy_(inverse_colour @ torch.tensor([128.0, 0.0, 0.0]) / 255.0)
        self.luma = _PlaneCoder(1, config.block, initial_log_steps(LUMA_TABLE, config.init_quality, config.block))
        self.chroma = _PlaneCoder(2, config.block, initial_log_steps(CHROMA_TABLE, config.init_quality, config.block))
        if config.chroma_subsampling == 2:
            self.chroma_down: nn.Module = nn.Conv2d(2, 2, 2, 2, groups=2, bias=False)
            # padding=3 on a 1-pixel replicate-padded input: libjpeg's edge handling (padding=1 on the bare
            # input would fade the outermost chroma row and column towards grey by a quarter).
            self.chroma_up: nn.Module = nn.ConvTranspose2d(2, 2, 4, 2, padding=3, groups=2, bias=False)
            triangle = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 4.0
            with torch.no_grad():
                self.chroma_down.weight.fill_(0.25)
                self.chroma_up.weight.copy_(torch.outer(triangle, triangle).expand(2, 1, 4, 4))
        else:
            self.chroma_down = nn.Identity()
            self.chroma_up = nn.Identity()
        self.refine: nn.Module | None = None
        if config.refine_width and config.refine_levels:
            self.refine = _UNetRefiner(config.refine_width, config.refine_levels)
        elif config.refine_width:
            width = config.refine_width
            self.refine = nn.Sequential(
                nn.Conv2d(6, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, 3, 3, padding=1),
            )
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)

    @property
    def rounding(self) -> str:
        """The differentiable rounding in use, ``"cubic"`` (the default, as trained) or ``"continuous"``."""
        scale = self.luma.quantise.cubic_scale
        return next(name for name, value in ROUNDINGS.items() if value == scale)

    def set_rounding(self, rounding: str) -> TransformComModel:
        """Switch the differentiable rounding (module docstring); the weights are unchanged. Returns ``self``."""
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        for coder in (self.luma, self.chroma):
            coder.quantise.cubic_scale = ROUNDINGS[rounding]
        return self

    def coded(self, x: torch.Tensor) -> torch.Tensor:
        """The structured coder alone (no refiner)."""
        ycc = self.colour(x)
        luma = self.luma(ycc[:, :1])
        chroma = self.chroma(self.chroma_down(ycc[:, 1:]))
        if self.config.chroma_subsampling == 2:
            chroma = F.pad(chroma, (1, 1, 1, 1), mode="replicate")
        chroma = self.chroma_up(chroma)
        return self.inverse_colour(torch.cat([luma, chroma], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1], H and W multiples of ``config.size_multiple`` -> (N, 3, H, W), linear."""
        coded = self.coded(x)
        if self.refine is None:
            return coded
        return coded + self.refine(torch.cat([x, coded], 1))


@register_model
def comodel_tc(
    pretrained: bool | PathLike = False,
    block: int = 8,
    chroma_subsampling: int = 2,
    init_quality: int = 50,
    refine_width: int = 32,
    refine_levels: int = 0,
) -> TransformComModel:
    """Transform-coding ComModel (module docstring); shipped weights are selected by codec (``comodel:jpeg:50``)."""
    config = TransformComModelConfig(block, chroma_subsampling, init_quality, refine_width, refine_levels)
    return load_pretrained(TransformComModel(config), pretrained, None, "comodel_tc")


@register_model
def comodel_tc_tiny(pretrained: bool | PathLike = False, init_quality: int = 50) -> TransformComModel:
    """Transform-coding ComModel with a 4-channel refiner, for tests and smoke runs."""
    config = TransformComModelConfig(8, 2, init_quality, 4)
    return load_pretrained(TransformComModel(config), pretrained, None, "comodel_tc_tiny")
