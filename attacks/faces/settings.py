"""The face cloak's settings and presets (torch-free): each setting declared once (``attacks/settings.setting``).

A face cloak is two frozen dataclasses: the loop's :class:`~comcloak.attacks.config.AttackConfig` (eps on the faces,
steps, draws, stand-in, seed; loss ``identity``) and :class:`FaceSettings` (which faces, the region around each, the
working view, the feathered mask, the whole-photo PSNR floor, the attacker's alignment jitter, the face models).
:func:`face_config` builds both from a preset of :data:`FACE_PRESETS`, the values given explicitly winning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from comcloak.attacks.config import MIN_ATTACK_SIZE, AttackConfig, AttackConfigError, EotSettings
from comcloak.attacks.settings import check_declared, setting

FACE_LOSS = "identity"  # comcloak.attacks.loss: the cosine to the clean embedding, descended


@dataclass(frozen=True)
class FaceSettings:
    """Where and how faces are cloaked; the loop's numbers are the :class:`AttackConfig` beside it.

    Attributes:
        min_face: faces whose box's shorter side is below this many photo pixels are reported, not cloaked.
        padding: the region around a face: a square of the box's longer side times ``1 + 2 * padding``, centred on
            the box (hair, ears, chin and the edges any recogniser's alignment may see), moved/shrunk into the photo.
        work_size: the side of the working view each region is resized to (the loop's ``x``).
        feather: the width of the mask's linear ramp to 0 at the region's border, as a fraction of its side (no
            ramp on sides that lie on the photo's border).
        min_psnr: a floor on the whole photo's PSNR (dB): a cloak below it is scaled down until it is above.
        landmark_noise: the attacker's landmark error, uniform within this fraction of the eye distance.
        scale_jitter, rotation_jitter, shift_jitter: the attacker's alignment error: relative scale, degrees, and
            a fraction of the crop's side, each uniform within +-.
        mirror_rate: fraction of draws whose aligned crop is mirrored (EotSettings.flip_rate stays 0).
        texture_floor: the texture-shaped budget's smallest factor of eps (on the smoothest skin); 1: a flat budget
            (eps everywhere). See ``attacks/faces/budget.texture_map``.
        texture_window: the side (working-view pixels) of the window whose local standard deviation measures
            texture.
        texture_quantile: pixels whose texture is at least this quantile of the region's get the whole eps; the
            others a factor proportional to their texture, never below ``texture_floor``.
        gradient_sigma: translation-invariant gradient smoothing (TI, Dong et al. 2019): the gradient reaching the
            loop's views is blurred with a Gaussian of this many working-view pixels; 0: off.
        detector, recogniser: the face models (``comcloak.models.faces``): the surrogate's detector and recogniser;
            ``recogniser`` may name several, separated by commas (``sface,tiny_mobilefacenet``): an ensemble, whose
            loss is the mean of the members' cosines and whose faces count as protected when every member is fooled.
    """

    min_face: int = setting(32, "smallest face (shorter box side, pixels) that is cloaked", kind="int", low=1)
    padding: float = setting(0.5, "region around a face, per side, as a fraction of the face box's longer side",
                             kind="real", low=0, high=2)
    work_size: int = setting(224, "side of each face region's working view, pixels", kind="int",
                             low=MIN_ATTACK_SIZE)
    feather: float = setting(0.12, "the mask's ramp at the region's border, fraction of its side", kind="real",
                             low=0, high=0.5)
    min_psnr: float = setting(30.0, "floor on the whole photo's PSNR, dB", kind="real", low=0, high=99)
    landmark_noise: float = setting(0.04, "landmark error, fraction of the eye distance", kind="real", low=0, high=1)
    scale_jitter: float = setting(0.06, "alignment scale error, relative", kind="real", low=0, high=0.5)
    rotation_jitter: float = setting(6.0, "alignment rotation error, degrees", kind="real", low=0, high=45)
    shift_jitter: float = setting(0.04, "alignment shift error, fraction of the crop", kind="real", low=0, high=0.5)
    mirror_rate: float = setting(0.5, "fraction of draws with the aligned crop mirrored", kind="real", low=0, high=1)
    texture_floor: float = setting(1.0, "smallest factor of eps on smooth skin (1: a flat budget)", kind="real",
                                   low=0, low_open=True, high=1)
    texture_window: int = setting(5, "side of the texture measure's window, working-view pixels", kind="int",
                                  low=1, high=64)
    texture_quantile: float = setting(0.6, "texture quantile of the region from which a pixel gets the whole eps",
                                      kind="real", low=0, low_open=True, high=1)
    gradient_sigma: float = setting(0.0, "Gaussian smoothing of the gradient (TI), working-view pixels; 0: off",
                                    kind="real", low=0, high=16)
    detector: str = setting("yunet", "the face detector (comcloak.models.faces)")
    recogniser: str = setting("sface", "the surrogate face recogniser(s) (comcloak.models.faces), comma-separated for "
                              "an ensemble")

    def __post_init__(self) -> None:
        check_declared(self)


@dataclass(frozen=True)
class FaceCloakConfig:
    """A face cloak: the loop's configuration (its eps is the per-face budget) and the face settings."""

    attack: AttackConfig
    face: FaceSettings = field(default_factory=FaceSettings)

    def __post_init__(self) -> None:
        eot = self.attack.eot
        # The region's landmarks are mapped into the loop's views: its draws may shrink, code and shift the whole
        # region, never crop or mirror it (mirroring is done on the aligned crop, mirror_rate).
        if eot.enabled and (eot.rescale_range != (1.0, 1.0) or eot.whole_image_rate != 1.0 or eot.flip_rate != 0.0):
            raise AttackConfigError("a face cloak's draws must keep the whole region: rescale_range (1, 1), "
                                    "whole_image_rate 1, flip_rate 0")
        if eot.block_transforms:  # a shuffled view no longer holds the region where its landmarks say
            raise AttackConfigError("a face cloak's draws do not move blocks: bsr_rate and sia_rate must be 0")
        if self.attack.stop_after:  # its loop judges identities by cosine, not classifier margins (issue 26: out)
            raise AttackConfigError("the face cloak does not stop photos early: stop_after must be 0")
        if self.attack.eps_start is not None:  # its budget is the texture map's at every step
            raise AttackConfigError("the face cloak does not grow its budget: eps_start must be unset")
        if self.attack.targeted:
            raise AttackConfigError("the face cloak is untargeted (away from the clean identity)")


@dataclass(frozen=True)
class FacePreset:
    """The numbers a face preset sets (eps and alpha on the 0-255 scale; alpha None: eps / steps)."""

    name: str
    summary: str
    eps: float
    steps: int
    draws: int
    min_psnr: float
    alpha: float | None = None
    measured: str = ""  # what docs/faces.md measured for it (dev photos)
    through: str = "comodel:jpeg:50"
    face: tuple[tuple[str, Any], ...] = ()  # FaceSettings fields the preset sets: (("texture_floor", 0.4), ...)


FACE_PRESETS: dict[str, FacePreset] = {preset.name: preset for preset in (
    # Chosen on the held-out surrogate signal (scripts/face_tune.py: MTCNN + SFace cosine, tune/confirm photo split,
    # other seed), never on dlib; docs/faces.md "Tuning" has every candidate. Large steps (the default's alpha is
    # eps / 2) so the perturbation reaches its texture-shaped bound: the largest single gain measured.
    FacePreset("faces", "the default", eps=14, steps=20, draws=2, min_psnr=33.0, alpha=7.0,
               face=(("texture_floor", 0.5),),
               measured="dev photos, 8 platforms: dlib pairs 96-100%, self 92-100% broken; SFace 100%; 35.6 dB"),
    FacePreset("faces-quality", "less visible: a smaller budget and a 38 dB floor", eps=10, steps=20, draws=2,
               min_psnr=38.0, alpha=2.5, face=(("texture_floor", 0.5),),
               measured="dev photos, 8 platforms: dlib pairs 42-54%, self 15-46% broken; SFace 100%; 39.4 dB"),
    FacePreset("faces-strong", "more budget, steps and draws", eps=18, steps=30, draws=3, min_psnr=30.0,
               alpha=3.0, face=(("texture_floor", 0.5),),
               measured="dev photos, 8 platforms: dlib pairs 100%, self 100% broken; SFace 100%; 33.3 dB"),
)}
DEFAULT_FACE_PRESET = "faces"
FACE_EOT = dict(rescale_range=(1.0, 1.0), whole_image_rate=1.0, flip_rate=0.0)  # see FaceCloakConfig
FACE_FIELDS = frozenset(item.name for item in fields(FaceSettings))
EOT_FIELDS = frozenset(item.name for item in fields(EotSettings))


def face_config(preset: str = DEFAULT_FACE_PRESET, **given: Any) -> FaceCloakConfig:
    """The face cloak of ``preset``, with the values given explicitly (None: not given) winning: FaceSettings'
    fields, EotSettings' (``draws``, ...) and AttackConfig's on the user's scales (``eps=10`` is 10/255).

    Example:
        >>> face_config("faces", steps=5).attack.steps
        5
    """
    if preset not in FACE_PRESETS:
        raise AttackConfigError(f"unknown face preset {preset!r}; available: {', '.join(FACE_PRESETS)}")
    chosen = FACE_PRESETS[preset]
    values = {key: value for key, value in given.items() if value is not None}
    face = FaceSettings(**{"min_psnr": chosen.min_psnr, **dict(chosen.face),
                           **{name: values.pop(name) for name in list(values) if name in FACE_FIELDS}})
    eot_given = {name: values.pop(name) for name in list(values) if name in EOT_FIELDS}
    eot = EotSettings(**{"draws": chosen.draws, "view_size": face.work_size, **FACE_EOT, **eot_given})
    attack = {"method": "mim", "eps": chosen.eps, "steps": chosen.steps, "alpha": chosen.alpha,
              "through": chosen.through, "loss": FACE_LOSS, "classifier": face.recogniser, **values}
    return FaceCloakConfig(AttackConfig.from_user(eot=eot, strength=preset, **attack), face)
