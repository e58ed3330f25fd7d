"""Differentiable stand-ins ``T`` for the compressor that the attack loop takes its gradient through.

Spec strings (``--through``):

* ``none`` — identity: the plain FGSM/BIM/MIM baseline.
* ``diffjpeg:Q`` — differentiable JPEG at quality Q (Shin & Song 2017, the paper's "Diff" baseline).
* ``comodel:PATH`` — a trained ComModel from a weights file (safetensors or a torch state dict); the width
  is read from the weights.
* ``mix:A|B|...`` — a random pick from several stand-ins at each step (quote it in a shell).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from comcloak.codecs.diffjpeg import DiffJPEG
from comcloak.models import create_model, freeze, load_state_dict_file

logger = logging.getLogger(__name__)

COMODEL_MULTIPLE = 16  # four stride-2 stages: ComModel needs H and W divisible by 16


class ThroughSpecError(ValueError):
    """A ``--through`` spec string is malformed or names something that does not exist."""


class ComModelThrough(nn.Module):
    """Runs a ComModel on any image size: edge-pads to a multiple of 16, crops back, clips to [0, 1]."""

    def __init__(self, comodel: nn.Module) -> None:
        super().__init__()
        self.comodel = comodel

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


def load_comodel(path: str | os.PathLike) -> nn.Module:
    """Load ComModel weights from ``path``; the width multiplier is inferred from the stem's channel count."""
    state = load_state_dict_file(path)
    stem = state.get("stem.conv.weight")
    if stem is None or stem.dim() != 4:
        raise ThroughSpecError(f"{path} has no 'stem.conv.weight'; is it a ComModel?")
    width = stem.shape[0] / 64
    model = create_model("comodel", width=width)
    model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    return model.eval()


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
    elif name == "comodel":
        if not argument:
            raise ThroughSpecError("comodel: needs a weights file, e.g. comodel:weights/jpeg50.safetensors")
        if not os.path.isfile(argument):
            raise ThroughSpecError(f"comodel weights not found: no file at {argument!r}")
        module = ComModelThrough(load_comodel(argument))
    elif name == "mix":
        parts = [part for part in argument.split("|") if part.strip()]
        if len(parts) < 2:
            raise ThroughSpecError(f"mix: needs at least two stand-ins separated by '|', got {argument!r}")
        module = RandomChoiceThrough([make_through(part, seed) for part in parts], seed=seed)
    else:
        raise ThroughSpecError(
            f"unknown --through {spec!r}; available: none, diffjpeg:Q, comodel:PATH, mix:A|B|..."
        )
    return freeze(module)
