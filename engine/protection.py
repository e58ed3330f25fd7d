"""What a cloak protects against (torch-free): classifiers' labels (``objects``), face recognition (``faces``) or
both in one perturbation (``both``, the default), and the face verdicts every front end reports.

Each setting is declared once, on :class:`Protection` (``attacks/settings.setting``): ``comcloak cloak``/``demo``'s
``--protect``, ``--face-preset`` and ``--face-steps``, ``Cloaker(protect=..., face_preset=..., face_steps=...)``,
``comcloak serve``'s query parameters and the manifest's settings hash all read them from there.

Example:
    >>> Protection().protect, Protection("objects").faces
    ('both', False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from comcloak.attacks.faces.settings import DEFAULT_FACE_PRESET, FACE_PRESETS, FaceCloakConfig, face_config
from comcloak.attacks.settings import check_declared, declared_fields, setting

PROTECT_CHOICES = ("faces", "objects", "both")
DEFAULT_PROTECT = "both"
PROTECT_HELP = (
    "what the cloak protects against: objects (ImageNet classifiers' labels: the photo's content is mislabelled; the "
    "whole photo changes within --eps), faces (face recognition matching the people in the photo to other photos of "
    "them: each detected face is cloaked and nothing outside the face regions changes; a photo without faces is "
    "reported 'no faces', never protected, and not written) or both (one perturbation: the face cloak, then the "
    "objects cloak starting from it; within the face regions the change is at most the face preset's eps, elsewhere "
    "--eps). both is the default because face recognition is the threat that motivates the tool, and a photo "
    "without faces costs only a detection: it protects people where there are some and objects everywhere")

# The verdict of one face after the --check platform (the surrogate detector and recogniser; never dlib).
PROTECTED = "protected"  # found again (IoU >= 0.3) and the recogniser no longer matches it to the clean face
NOT_PROTECTED = "not protected"  # found again and still matched
NOT_FOUND = "not found"  # the detector no longer finds it on the cloak: never counted as protected
TOO_SMALL = "too small, not cloaked"  # smaller than the face preset's min_face
NO_FACES = "no faces"  # a photo without detected faces: never protected under --protect faces


@dataclass(frozen=True)
class Protection:
    """What a cloak protects against, and how faces are cloaked.

    Attributes:
        protect: ``objects``, ``faces`` or ``both`` (:data:`PROTECT_HELP`).
        face_preset: the face cloak's preset (``comcloak.attacks.faces.FACE_PRESETS``).
        face_steps: the face cloak's steps per face (None: the preset's); fewer is faster and protects less.
    """

    protect: str = setting(DEFAULT_PROTECT, PROTECT_HELP, kind="choice", choices=PROTECT_CHOICES,
                           commands=("cloak",), group="protection")
    face_preset: str = setting(DEFAULT_FACE_PRESET, "the face cloak's preset: " + "; ".join(
        f"{name} ({preset.summary}: eps {preset.eps:g}, {preset.steps} steps x {preset.draws} draws, whole-photo "
        f"PSNR floor {preset.min_psnr:g} dB)" for name, preset in FACE_PRESETS.items())
        + ". Measured protection in docs/faces.md", kind="choice", choices=lambda: tuple(FACE_PRESETS),
        commands=("cloak",), group="protection")
    face_steps: int | None = setting(None, "attack steps per face; fewer is faster and protects less",
                                     kind="int", low=1, commands=("cloak",), group="protection",
                                     default_text="the face preset's", metavar="N")

    def __post_init__(self) -> None:
        check_declared(self)

    @property
    def faces(self) -> bool:
        """Whether faces are cloaked (``faces`` or ``both``)."""
        return self.protect != "objects"

    @property
    def objects(self) -> bool:
        """Whether the whole-photo classifier cloak runs (``objects`` or ``both``)."""
        return self.protect != "faces"

    def face_config(self) -> FaceCloakConfig:
        """The face cloak of ``face_preset`` with ``face_steps`` (``comcloak.attacks.faces.face_config``)."""
        return face_config(self.face_preset, steps=self.face_steps)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Protection:
        """The protection of the declared keywords in ``settings`` (None: not given); AttackConfigError names a bad
        value. Example: ``Protection.from_settings({"protect": "faces"})``."""
        return cls(**{name: value for name, value in settings.items() if name in PROTECTION_KEYWORDS
                      and value is not None})


PROTECTION_KEYWORDS = frozenset(entry.keyword for entry in declared_fields(Protection))


def protection_settings(protection: Protection, faces: FaceCloakConfig | None) -> dict[str, Any]:
    """What the protection adds to an archive's settings hash: nothing for ``objects`` (so folders cloaked before
    faces existed resume unchanged), else ``protect`` and the face cloak as run (its preset's numbers, steps and
    settings), so a change of either redoes the photos."""
    if not protection.faces:
        return {}
    return {"protect": protection.protect, "faces": asdict(faces or protection.face_config())}


def face_report(face: Any, cosine: float | None, verdict: str) -> dict[str, Any]:
    """One face's entry of a record and of ``--report`` (``face``: a ``comcloak.attacks.faces.FaceRecord``):
    ``box`` [x, y, w, h] and ``score`` (the detector's, on the original), ``cloaked``, ``region`` [x, y, side]
    (the square the cloak may change; None when not cloaked), ``steps``, ``cosine`` (the surrogate's to the clean
    face after the ``--check`` platform; None when not cloaked or not found), ``verdict`` and ``seconds``."""
    region = face.region
    return {"box": [round(float(value), 1) for value in face.box], "score": round(float(face.score), 4),
            "cloaked": region is not None,
            "region": None if region is None else [region.left, region.top, region.side], "steps": face.steps,
            "cosine": None if cosine is None else round(float(cosine), 4), "verdict": verdict,
            "seconds": round(float(face.seconds), 3)}


def no_face_cloaked_reason(faces: list[dict[str, Any]]) -> str:
    """Why ``--protect faces`` wrote nothing for a photo: no faces, or none large enough to cloak."""
    if not faces:
        return "no faces found: --protect faces changes only faces, so nothing was cloaked or written (not protected)"
    return (f"no face large enough to cloak ({len(faces)} found, each {TOO_SMALL}): nothing was cloaked or written "
            "(not protected)")


def face_summary(faces: Iterable[Mapping[str, Any]] | None) -> str:
    """The faces of one photo in words: ``-`` (faces not asked for), ``no faces``, ``2/2 protected``, ``1/2
    protected, 1 not found``.

    Example:
        >>> face_summary([{"verdict": "protected"}, {"verdict": "not found"}])
        '1/2 protected, 1 not found'
    """
    if faces is None:
        return "-"
    verdicts = [face["verdict"] for face in faces]
    if not verdicts:
        return NO_FACES
    text = f"{verdicts.count(PROTECTED)}/{len(verdicts)} protected"
    others = [f"{verdicts.count(verdict)} {verdict}" for verdict in (NOT_PROTECTED, NOT_FOUND, TOO_SMALL)
              if verdict in verdicts]
    return ", ".join([text, *others])


def faces_protected(faces: Iterable[Mapping[str, Any]] | None) -> bool:
    """Whether a photo's faces are protected: at least one face, and every one ``protected`` (a photo without faces,
    a face not found again or too small to cloak is not)."""
    verdicts = [face["verdict"] for face in faces or ()]
    return bool(verdicts) and all(verdict == PROTECTED for verdict in verdicts)

