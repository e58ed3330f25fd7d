"""comcloak.attacks.faces: the face cloak (issue 25), in the one attack loop (docs/faces.md).

``cloak_faces(photo, face_config("faces"))`` cloaks every detected face above a minimum size against face
recognition: the perturbation lives on a padded square around each face, is optimised through the surrogate's
jittered alignment and recogniser (SFace) away from the clean identity, and is composed back with a feathered mask.
"""

from comcloak.attacks.faces.cloak import FaceCloakResult, FaceModels, FaceRecord, cloak_faces
from comcloak.attacks.faces.settings import (
    DEFAULT_FACE_PRESET,
    FACE_PRESETS,
    FaceCloakConfig,
    FacePreset,
    FaceSettings,
    face_config,
)

__all__ = [
    "DEFAULT_FACE_PRESET",
    "FACE_PRESETS",
    "FaceCloakConfig",
    "FaceCloakResult",
    "FaceModels",
    "FacePreset",
    "FaceRecord",
    "FaceSettings",
    "cloak_faces",
    "face_config",
]
