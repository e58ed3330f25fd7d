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

A stand-in family of your own is one builder and one :func:`register_through` line (``tests/recipes/
test_add_through.py``); a package installed beside comcloak registers it from the ``comcloak.throughs`` entry points.

In evaluations, ``comodel:auto`` stands for :func:`matched_through_spec` of each codec evaluated: the paper's setting,
in which the platform's compressor is approximated by a ComModel trained for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from comcloak import defaults, plugins
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
    the attack loop averages the loss over the blocks (``comcloak.attacks.loop.descent_gradient``)."""

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

    The shipped ComModel for the codec (a platform profile: for its chain) when there is one (``comodel:jpeg:50``);
    otherwise the stand-in the codec declares (``Codec.stand_in``: ``none`` for ``none``, differentiable JPEG at the
    same quality for a JPEG, the JPEG-50 ComModel by default).
    """
    from comcloak.codecs import parse_codec

    codec = parse_codec(codec_spec).imitated
    if codec.spec in comodel_io.list_shipped_comodels():
        return f"comodel:{codec.spec}"
    if codec.stand_in == defaults.THROUGH:
        logger.info("no shipped ComModel for %s; using %s", codec.spec, defaults.THROUGH)
    return codec.stand_in


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


ThroughBuilder = Callable[[str, int], nn.Module]


@dataclass(frozen=True)
class ThroughInfo:
    """One registered stand-in family: ``NAME`` or ``NAME:ARGUMENT`` in a ``--through`` spec.

    Attributes:
        name: the spec's prefix, lower case (``diffjpeg``).
        build: ``build(argument, seed) -> module``: the stand-in for the text after the first ``:`` ('' if none);
            raises :class:`ThroughSpecError` with one line for a bad argument.
        usages: how it is spelled, for the unknown-spec message (``("diffjpeg:Q",)``).
        aliases: other names for it (``identity`` for ``none``).
    """

    name: str
    build: ThroughBuilder
    usages: tuple[str, ...]
    aliases: tuple[str, ...] = ()


_THROUGHS: dict[str, ThroughInfo] = {}


def register_through(info: ThroughInfo) -> ThroughInfo:
    """Add a stand-in family (a later registration of the same name replaces it); returns ``info``."""
    for name in (info.name, *info.aliases):
        if name != name.lower() or not name or any(mark in name for mark in ":|+, "):
            raise ValueError(f"stand-in name must be lower case without ':', '|', '+', ',' or spaces, got {name!r}")
        _THROUGHS[name] = info
    return info


def unregister_through(name: str) -> None:
    """Remove the stand-in family ``name`` and its aliases; unknown names are ignored."""
    info = _THROUGHS.get(name)
    for key in (info.name, *info.aliases) if info is not None else ():
        _THROUGHS.pop(key, None)


def registered_throughs() -> tuple[ThroughInfo, ...]:
    """Every registered stand-in family once, in registration order (entry-point plugins included)."""
    plugins.load_plugins(plugins.THROUGHS)
    return tuple(dict.fromkeys(_THROUGHS.values()))


def make_through(spec: str, seed: int = 0) -> nn.Module:
    """Build the stand-in named by ``spec`` (see the module docstring), in eval mode with frozen weights."""
    spec = spec.strip()
    name, _, argument = spec.partition(":")
    plugins.load_plugins(plugins.THROUGHS)
    info = _THROUGHS.get(name.lower())
    if info is None:
        available = ", ".join(usage for entry in registered_throughs() for usage in entry.usages)
        raise ThroughSpecError(f"unknown --through {spec!r}; available: {available}")
    return freeze(info.build(argument, seed))


def _identity(argument: str, seed: int) -> nn.Module:
    if argument:
        raise ThroughSpecError(f"none (identity) takes no argument, got {argument!r}")
    return nn.Identity()


def _diffjpeg(argument: str, seed: int) -> nn.Module:
    try:
        quality = int(argument)
    except ValueError:
        raise ThroughSpecError(f"diffjpeg quality must be an integer in 1..100, got {argument!r}") from None
    if not 1 <= quality <= 100:
        raise ThroughSpecError(f"diffjpeg quality must be an integer in 1..100, got {argument!r}")
    return DiffJPEG(quality)


def _comodel(rounding: str) -> ThroughBuilder:
    name = "comodel-cubic" if rounding == "cubic" else "comodel"

    def build(argument: str, seed: int) -> nn.Module:
        if name == "comodel" and argument.lower() == "auto":
            raise ThroughSpecError(
                "comodel:auto picks the ComModel of each codec evaluated; it only applies to comcloak eval --through"
            )
        if not argument:
            raise ThroughSpecError(f"{name}: needs a codec spec or a weights file, e.g. {name}:jpeg:50")
        return ComModelThrough(load_comodel(resolve_comodel(argument)), rounding)

    return build


def _several(name: str) -> ThroughBuilder:
    def build(argument: str, seed: int) -> nn.Module:
        parts = [part for part in argument.split("|") if part.strip()]
        if len(parts) < 2:
            raise ThroughSpecError(f"{name}: needs at least two stand-ins separated by '|', got {argument!r}")
        choices = [make_through(part, seed) for part in parts]
        return RandomChoiceThrough(choices, seed=seed) if name == "mix" else ExpectationThrough(choices)

    return build


# The shipped stand-ins: one line each.
register_through(ThroughInfo("none", _identity, ("none",), aliases=("identity",)))
register_through(ThroughInfo("diffjpeg", _diffjpeg, ("diffjpeg:Q",)))
register_through(ThroughInfo("comodel", _comodel(ATTACK_ROUNDING), ("comodel:CODEC", "comodel:PATH")))
register_through(ThroughInfo("comodel-cubic", _comodel("cubic"), ("comodel-cubic:CODEC", "comodel-cubic:PATH")))
register_through(ThroughInfo("mix", _several("mix"), ("mix:A|B|...",)))
register_through(ThroughInfo("eot", _several("eot"), ("eot:A|B|...",)))
