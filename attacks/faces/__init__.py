"""comcloak.attacks.faces: the face cloak (issue 25), in the one attack loop (docs/faces.md).

``cloak_faces(photo, face_config("faces"))`` cloaks every detected face above a minimum size against face
recognition: the perturbation lives on a padded square around each face, is optimised through the surrogate's
jittered alignment and recogniser (SFace, or an ensemble of recognisers) away from the clean identity, and is
composed back with a feathered mask.

The settings and presets (:mod:`comcloak.attacks.faces.settings`) are torch-free and imported eagerly; the cloak
itself needs torch and is imported on first use, so the CLI's parser can list the face presets without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from comcloak.attacks.faces.settings import (
    DEFAULT_FACE_PRESET,
    FACE_PRESETS,
    FaceCloakConfig,
    FacePreset,
    FaceSettings,
    face_config,
)

_LAZY = {"FaceCheck": "cloak", "FaceCloakResult": "cloak", "FaceModels": "cloak", "FaceRecord": "cloak",
         "cloak_faces": "cloak"}

__all__ = [
    "DEFAULT_FACE_PRESET",
    "FACE_PRESETS",
    "FaceCloakConfig",
    "FacePreset",
    "FaceSettings",
    "face_config",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
