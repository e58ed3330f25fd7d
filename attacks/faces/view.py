"""What the surrogate recogniser sees of a face region: the loop's "classifier" for the face cloak.

:class:`IdentityView` maps views of one face region (B, 3, S, S) to the cosine similarities of their embeddings to a
gallery of clean embeddings (B, K): a classifier over identities, so the one loop (``attacks/loop.run_attack``) with
the ``identity`` loss pushes each draw's embedding away from the clean one. Each call aligns the views to the
recogniser's 112 x 112 template through the 5-landmark similarity (``models/faces/align``), jittered per row as an
attacker's detector and alignment would err (landmark noise, scale, rotation, shift; flips of the aligned crop),
from its own generator seeded by the region's content.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from comcloak.attacks.faces.budget import smooth_gradient
from comcloak.attacks.faces.settings import FaceSettings
from comcloak.models.faces import ARCFACE_SIZE, similarity_transform, warp_affine
from comcloak.models.faces.align import template

EYES = (0, 1)  # YuNet's landmark order: right eye, left eye, nose, mouth corners


def rescale_points(points: torch.Tensor, size_in: float, size_out: float) -> torch.Tensor:
    """Pixel coordinates (centres at integers) after a resize of ``size_in`` to ``size_out`` pixels."""
    return (points + 0.5) * (size_out / size_in) - 0.5


def jitter_matrices(generator: torch.Generator, batch: int, settings: FaceSettings) -> torch.Tensor:
    """(batch, 3, 3) similarity maps of the aligned crop about its centre: scale, rotation and shift errors."""
    def uniform(amplitude: float) -> torch.Tensor:
        return amplitude * (2 * torch.rand(batch, generator=generator, dtype=torch.float64) - 1)

    scale = 1 + uniform(settings.scale_jitter)
    angle = uniform(math.radians(settings.rotation_jitter))
    shift = torch.stack([uniform(settings.shift_jitter), uniform(settings.shift_jitter)], 1) * ARCFACE_SIZE
    centre = torch.full((batch, 2), (ARCFACE_SIZE - 1) / 2, dtype=torch.float64)
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    offset = centre + shift - (linear @ centre[:, :, None])[..., 0]
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(batch, 1, 3)
    return torch.cat([torch.cat([linear, offset[:, :, None]], 2), bottom], 1)


class IdentityView(nn.Module):
    """Views of one face region -> cosine similarity of the recogniser's embeddings to ``gallery``: (B, K).

    Args:
        recogniser: maps aligned crops (B, 3, 112, 112) in [0, 1] to embeddings (B, E).
        landmarks: (5, 2) the face's landmarks in the working view's pixels (``work_size`` square).
        work_size: the side of the working view the landmarks are given in.
        gallery: (K, E) unit embeddings (the clean face's: K = 1).
        settings: the jitter (:class:`FaceSettings`).
        seed: seeds the jitter; None: no jitter (the clean alignment, as the judge's).
    """

    def __init__(self, recogniser: nn.Module, landmarks: torch.Tensor, work_size: int, gallery: torch.Tensor,
                 settings: FaceSettings, seed: int | None = None) -> None:
        super().__init__()
        self.recogniser = recogniser
        self.landmarks = landmarks.double()
        self.work_size = work_size
        self.gallery = gallery
        self.settings = settings
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def matrices(self, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, 2, 3) alignment maps of views of ``size`` pixels onto the template, and (batch,) flips."""
        marks = rescale_points(self.landmarks, self.work_size, size).expand(batch, -1, -1)
        if self.generator is None:
            matrix = similarity_transform(marks, template(ARCFACE_SIZE, torch.float64))
            return matrix, torch.zeros(batch, dtype=torch.bool)
        eyes = (marks[:, EYES[0]] - marks[:, EYES[1]]).norm(dim=-1)[:, None, None]
        noise = (2 * torch.rand(marks.shape, generator=self.generator, dtype=torch.float64) - 1)
        marks = marks + noise * eyes * self.settings.landmark_noise
        matrix = similarity_transform(marks, template(ARCFACE_SIZE, torch.float64))
        matrix = self._jittered(matrix, batch)
        flips = torch.rand(batch, generator=self.generator) < self.settings.mirror_rate
        return matrix, flips

    def _jittered(self, matrix: torch.Tensor, batch: int) -> torch.Tensor:
        full = torch.cat([matrix, torch.tensor([0.0, 0.0, 1.0], dtype=matrix.dtype).expand(batch, 1, 3)], 1)
        return (jitter_matrices(self.generator, batch, self.settings) @ full)[:, :2]

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """Unit embeddings (B, E) of the (jittered) aligned crops of ``views`` (B, 3, S, S)."""
        matrix, flips = self.matrices(views.shape[0], views.shape[-1])
        crops = warp_affine(views, matrix.to(views.device, views.dtype), (ARCFACE_SIZE, ARCFACE_SIZE))
        if flips.any():
            crops = torch.where(flips.to(views.device)[:, None, None, None], crops.flip(-1), crops)
        return F.normalize(self.recogniser(crops), dim=-1)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        # TI: the gradient reaching the views (after the loop's draws) is blurred, settings.gradient_sigma pixels
        return self.embed(smooth_gradient(views, self.settings.gradient_sigma)) @ self.gallery.to(views).T
