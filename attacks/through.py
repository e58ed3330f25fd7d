"""Differentiable stand-ins ``T`` for the compressor that the attack loop takes its gradient through.

Spec strings (``--through``):

* ``none`` — identity: the plain FGSM/BIM/MIM baseline.
* ``diffjpeg:Q`` — differentiable JPEG at quality Q (Shin & Song 2017, the paper's "Diff" baseline).
* ``comodel:CODEC`` — the shipped ComModel trained for a codec spec, e.g. ``comodel:jpeg:50``,
  ``comodel:resize:2048+jpeg:85`` (``comcloak.models.comodel_io.list_shipped_comodels``).
* ``comodel:PATH`` — a trained ComModel from a weights file (``comcloak train`` output, or a paper-ComModel state
  dict whose width is read from the weights). An existing file wins over a codec spec of the same spelling.
  A transform-coding ComModel is differentiated through its continuous rounding relaxation
  (``comcloak.models.comodel_tc``): it gives attacks a much better path than the cubic it was trained with.
* ``comodel-cubic:CODEC`` / ``comodel-cubic:PATH`` — the same ComModel with the cubic rounding it was trained with
  (Shin & Song's, as in the "Diff" baseline): the ablation of the relaxation.
* ``mix:A|B|...`` — a random pick from several stand-ins at each step (quote it in a shell).
* ``eot:A|B|...`` — expectation over transformations: every step's loss is the mean over all the stand-ins, so
  the gradient is their average (Shin & Song's ensemble of JPEG qualities, or several ComModels).

In evaluations, ``comodel:auto`` stands for :func:`matched_through_spec` of each codec evaluated: the paper's setting,
in which the platform's compressor is approximated by a ComModel trained for it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from comcloak import defaults
from comcloak.codecs import CodecSpecError
from comcloak.codecs.diffjpeg import DiffJPEG
from comcloak.errors import UserError
from comcloak.models import WeightsError, comodel_io, freeze
from comcloak.models.comodel_tc import TransformComModel

logger = logging.getLogger(__name__)

COMODEL_MULTIPLE = 16  # four stride-2 stages: ComModel needs H and W divisible by 16
AUTO_THROUGH = "comodel:auto"
ATTACK_ROUNDING = "continuous"


class ThroughSpecError(UserError, ValueError):
    """A ``--through`` spec string is malformed or names something that does not exist."""


class ComModelThrough(nn.Module):
    """Runs a ComModel on any image size: edge-pads to a multiple of 16, crops back, clips to [0, 1].

    Args:
        comodel: a ComModel. A transform-coding one is switched, in place, to ``rounding``.
        rounding: ``"continuous"`` (default, :data:`ATTACK_ROUNDING`) or ``"cubic"``; see
            ``comcloak.models.comodel_tc``. Ignored by the paper's ComModel, which has no rounding step.
    """

    def __init__(self, comodel: nn.Module, rounding: str = ATTACK_ROUNDING) -> None:
        super().__init__()
        self.comodel = comodel
        if isinstance(comodel, TransformComModel):
            comodel.set_rounding(rounding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = (-height) % COMODEL_MULTIPLE
        pad_w = (-width) % COMODEL_MULTIPLE
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        return self.comodel(padded)[..., :height, :width].clamp(0.0, 1.0)


class RandomChoiceThrough(nn.Module):
    """Picks one of several stand-ins uniformly at random on every call (one pick per attack step)."""

    def __init__(self, choices: list[nn.Module], seed: int = 0) -> None:
        super().__init__()
        if not choices:
            raise ThroughSpecError("mix: needs at least one stand-in")
        self.choices = nn.ModuleList(choices)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = int(torch.randint(len(self.choices), (1,), generator=self.generator))
        return self.choices[index](x)


class ExpectationThrough(nn.Module):
    """``eot:``: all stand-ins at once. The output stacks their outputs along the batch, ``copies`` blocks of N;
    the attack loop averages the loss over the blocks (``comcloak.attacks.loop.loss_and_gradient``)."""

    def __init__(self, choices: list[nn.Module]) -> None:
        super().__init__()
        if not choices:
            raise ThroughSpecError("eot: needs at least one stand-in")
        self.choices = nn.ModuleList(choices)

    @property
    def copies(self) -> int:
        return len(self.choices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([choice(x) for choice in self.choices])


def load_comodel(path: str | os.PathLike) -> nn.Module:
    """Load a trained ComModel (any architecture) from ``path``; raises ThroughSpecError with one line."""
    try:
        return comodel_io.load_comodel(path)
    except WeightsError as exc:
        raise ThroughSpecError(str(exc)) from None


def resolve_comodel(argument: str) -> Path:
    """The weights file for ``comodel:ARGUMENT``: an existing file, else the shipped ComModel for a codec spec."""
    if os.path.isfile(argument):
        return Path(argument)
    try:
        comodel_io.canonical_codec(argument)
    except CodecSpecError:
        shipped = ", ".join(sorted(comodel_io.list_shipped_comodels())) or "none"
        raise ThroughSpecError(
            f"comodel:{argument}: no such weights file, and not a codec spec with a shipped ComModel "
            f"(shipped: {shipped})"
        ) from None
    try:
        return comodel_io.shipped_comodel_path(argument)
    except WeightsError as exc:
        raise ThroughSpecError(str(exc)) from None


def matched_through_spec(codec_spec: str) -> str:
    """The stand-in that imitates the codec chain ``codec_spec``.

    The shipped ComModel for that codec when there is one (``comodel:jpeg:50``); ``none`` for the codec ``none``;
    differentiable JPEG at the same quality for a JPEG without a shipped ComModel; otherwise the JPEG-50 ComModel.
    """
    from comcloak.codecs import Platform, parse_codec
    from comcloak.codecs.real import Identity, Jpeg

    codec = parse_codec(codec_spec)
    if isinstance(codec, Platform):  # a profile is imitated by the stand-in of the chain it stands for
        codec = codec.chain
    if codec.spec in comodel_io.list_shipped_comodels():
        return f"comodel:{codec.spec}"
    if isinstance(codec, Identity):
        return "none"
    if isinstance(codec, Jpeg):
        return f"diffjpeg:{codec.quality}"
    logger.info("no shipped ComModel for %s; using %s", codec.spec, defaults.THROUGH)
    return defaults.THROUGH


class CodecMatchedThroughs:
    """``comodel:auto``: for each codec evaluated, the stand-in matched to it (:func:`matched_through_spec`).

    Modules are built once per stand-in spec and moved to the device given to :meth:`to`.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.device: torch.device | str = "cpu"
        self._built: dict[str, nn.Module] = {}

    def to(self, device: torch.device | str) -> CodecMatchedThroughs:
        self.device = device
        self._built = {spec: module.to(device) for spec, module in self._built.items()}
        return self

    def for_codec(self, codec_spec: str) -> tuple[str, nn.Module]:
        """(stand-in spec, module) for the codec chain ``codec_spec``."""
        spec = matched_through_spec(codec_spec)
        if spec not in self._built:
            self._built[spec] = make_through(spec, self.seed).to(self.device)
        return spec, self._built[spec]


def make_through(spec: str, seed: int = 0) -> nn.Module:
    """Build the stand-in named by ``spec`` (see the module docstring), in eval mode with frozen weights."""
    spec = spec.strip()
    name, _, argument = spec.partition(":")
    name = name.lower()
    if name in ("none", "identity") and not argument:
        module: nn.Module = nn.Identity()
    elif name == "diffjpeg":
        try:
            quality = int(argument)
        except ValueError:
            raise ThroughSpecError(f"diffjpeg quality must be an integer in 1..100, got {argument!r}") from None
        if not 1 <= quality <= 100:
            raise ThroughSpecError(f"diffjpeg quality must be an integer in 1..100, got {argument!r}")
        module = DiffJPEG(quality)
    elif name == "comodel" and argument.lower() == "auto":
        raise ThroughSpecError(
            "comodel:auto picks the ComModel of each codec evaluated; it only applies to comcloak eval --through"
        )
    elif name in ("comodel", "comodel-cubic"):
        if not argument:
            raise ThroughSpecError(f"{name}: needs a codec spec or a weights file, e.g. {name}:jpeg:50")
        rounding = "cubic" if name == "comodel-cubic" else ATTACK_ROUNDING
        module = ComModelThrough(load_comodel(resolve_comodel(argument)), rounding)
    elif name in ("mix", "eot"):
        parts = [part for part in argument.split("|") if part.strip()]
        if len(parts) < 2:
            raise ThroughSpecError(f"{name}: needs at least two stand-ins separated by '|', got {argument!r}")
        choices = [make_through(part, seed) for part in parts]
        module = RandomChoiceThrough(choices, seed=seed) if name == "mix" else ExpectationThrough(choices)
    else:
        raise ThroughSpecError(
            f"unknown --through {spec!r}; available: none, diffjpeg:Q, comodel:CODEC, comodel:PATH, "
            "comodel-cubic:CODEC, comodel-cubic:PATH, mix:A|B|..., eot:A|B|..."
        )
    return freeze(module)
