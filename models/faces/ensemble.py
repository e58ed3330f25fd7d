"""Ensembles of face recognisers: one module whose cosine is the members' mean cosine.

Each member's embedding is L2-normalised and scaled by ``1 / sqrt(M)``, and the M pieces are concatenated: the
result has unit norm and its dot product with another such embedding is the *mean* of the members' cosines. So the
identity loss (:class:`~comcloak.attacks.faces.view.IdentityView`), the exported face step and any gallery take an
ensemble exactly as they take one recogniser. Each member keeps its own threshold (``cosine_threshold``, a class
attribute of the registered recognisers): :func:`member_cosines` splits two ensemble embeddings back into the
members' cosines, so a face counts as protected only when *every* member no longer matches it.

Example::

    recogniser = create_recogniser("sface,mobilefacenet")    # a FaceEnsemble; "sface" alone: the SFace module
    member_cosines(recogniser, a, b)                          # (cosine of SFace, cosine of MobileFaceNet)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from comcloak.errors import UserError

from .align import ARCFACE_SIZE
from .registry import create_face_model, face_model_kind


class FaceEnsemble(nn.Module):
    """(N, 3, 112, 112) aligned crops in [0, 1] -> (N, sum of the members' widths): the members' unit embeddings,
    each scaled by 1/sqrt(M), side by side (unit norm; the dot product of two is the mean member cosine)."""

    def __init__(self, members: list[nn.Module], names: list[str]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.names = tuple(names)
        self.scale = 1.0 / math.sqrt(len(members))
        with torch.no_grad():  # each member's embedding width, from one dry run (plugins' recognisers included)
            probe = torch.zeros(1, 3, ARCFACE_SIZE, ARCFACE_SIZE)
            self.widths = tuple(int(member(probe).shape[1]) for member in members)

    @property
    def cosine_thresholds(self) -> tuple[float, ...]:
        """Each member's own threshold: cosine below it, not the same person."""
        return tuple(recogniser_threshold(member) for member in self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = []
        for member, width in zip(self.members, self.widths):
            e = member(x)
            # L2 normalisation with the ops the exported step differentiates (mean, pow, div; the width a constant,
            # so torch.fx traces no shape): e / |e| / sqrt(M)
            norm = (e * e).mean(1, keepdim=True) * width
            pieces.append(e / (norm + 1e-12) ** 0.5 * self.scale)
        return torch.cat(pieces, 1)


def recogniser_threshold(recogniser: nn.Module) -> float:
    """A recogniser's cosine threshold (same person at or above it): its class's ``cosine_threshold``."""
    threshold = getattr(recogniser, "cosine_threshold", None)
    if threshold is None:
        raise UserError(f"the face recogniser {type(recogniser).__name__} declares no cosine_threshold")
    return float(threshold)


def recogniser_names(spec: str) -> list[str]:
    """``"sface,mobilefacenet"`` -> ``["sface", "mobilefacenet"]``, each a registered recogniser; a one-line error
    for empty, repeated or unknown names and for detectors."""
    names = [name.strip() for name in spec.split(",")]
    if not spec.strip() or any(not name for name in names):
        raise UserError(f"a face recogniser is one name or a comma-separated list of names, got {spec!r}")
    if len(set(names)) != len(names):
        raise UserError(f"the face recognisers name one twice: {spec!r}")
    for name in names:
        if face_model_kind(name) != "recogniser":
            raise UserError(f"{name!r} is a face detector, not a recogniser")
    return names


def create_recogniser(spec: str) -> nn.Module:
    """The recogniser of ``spec`` (eval mode): one registered name gives its module, several separated by commas a
    :class:`FaceEnsemble` of them; a detector's name is refused (one line)."""
    names = recogniser_names(spec)
    if len(names) == 1:
        return create_face_model(names[0]).eval()
    return FaceEnsemble([create_face_model(name).eval() for name in names], names).eval()


def member_cosines(recogniser: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[float, ...]:
    """The cosines of two embeddings (E,) of ``recogniser``, one per member (one value for a single recogniser)."""
    widths = recogniser.widths if isinstance(recogniser, FaceEnsemble) else (a.shape[-1],)
    pieces = zip(torch.split(a, widths, -1), torch.split(b, widths, -1))
    return tuple(float(nn.functional.cosine_similarity(x.detach(), y.detach(), dim=-1)) for x, y in pieces)


def recogniser_thresholds(recogniser: nn.Module) -> tuple[float, ...]:
    """The members' thresholds, in :func:`member_cosines`' order."""
    if isinstance(recogniser, FaceEnsemble):
        return recogniser.cosine_thresholds
    return (recogniser_threshold(recogniser),)
