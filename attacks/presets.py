"""Named strengths (``--strength``): the attack's numbers for the trade-offs users pick from, torch-free.

Every preset but ``paper`` is the robust attack: the loss averaged, at every step, over random draws of what the
platform and the attacker's preprocessing may do to the photo (``comcloak.attacks.eot``), on a working view larger than
the attacker's 224-pixel view. ``balanced`` is the default of ``comcloak cloak``, ``demo`` and the Python API.
Their measured protection, PSNR and time per photo are in docs/RESULTS.md (the platform protocol on the dev photos).

The surrogates are EfficientNet-Lite0 and MobileNetV2; EfficientNet-Lite1/Lite2 are evaluation-only and never used here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from comcloak.attacks.config import AttackConfig, AttackConfigError, EotSettings
from comcloak.attacks.methods import iterative_methods
from comcloak.defaults import SIGN_STEP

ENSEMBLE = "efficientnet_lite0,mobilenet_v2"
EOT_FIELDS = frozenset(item.name for item in fields(EotSettings))


@dataclass(frozen=True)
class Preset:
    """The numbers a strength sets (eps on the 0-255 scale); anything the user gives explicitly wins."""

    name: str
    summary: str
    eps: float
    steps: int
    draws: int
    attack_size: int
    classifier: str
    loss: str
    measured: str = ""  # what docs/RESULTS.md measured for it (platform protocol, crop view, dev photos)
    through: str = "comodel:jpeg:50"
    method: str = "mim"
    alpha: float | None = None  # the step on the 0-255 scale; None: eps / steps
    budget: str = "uniform"  # the per-pixel budget (AttackConfig.budget)
    stop_after: int = 0  # per-photo stopping (AttackConfig.stop_after); 0: every photo takes every step
    stop_margin: float = 1.0
    label_view: str = "crop"  # the clean label from the attacker's centre crop (AttackConfig.label_view)
    step_rule: str = SIGN_STEP  # how each step moves the pixels (AttackConfig.step_rule)

    def describe(self) -> str:
        robust = f"{self.draws} draws/step, working view {self.attack_size} px" if self.draws else \
            f"no draws, attack view {self.attack_size} px"
        budget = f", {self.budget} budget" if self.budget != "uniform" else ""
        stopping = (f", each photo stops after {self.stop_after} safe steps (margin {self.stop_margin:g})"
                    if self.stop_after else "")
        stopping += f", {self.step_rule} steps" if self.step_rule != SIGN_STEP else ""
        measured = f"; measured: {self.measured}" if self.measured else ""
        return (f"{self.name}: {self.summary} (eps {self.eps:g}, {self.steps} steps, {robust}{budget}{stopping}, "
                f"{self.loss} loss, surrogates {self.classifier}{measured})")


PRESETS: dict[str, Preset] = {preset.name: preset for preset in (
    Preset("fast", "one draw per step, one surrogate", eps=6, steps=10, draws=1, attack_size=256,
           classifier="efficientnet_lite0", loss="margin", step_rule="scaled",
           measured="Lite0 93-98%, unseen Lite1/Lite2 67-79% protected after 8 platforms, 39.8 dB"),
    Preset("balanced", "the default: two draws per step, two surrogates, the capped budget (eps on texture, a "
                       "quarter of it on flat regions: quiet skies)", eps=7, steps=20, draws=2, attack_size=288,
           classifier=ENSEMBLE, loss="margin", step_rule="scaled", budget="capped",
           measured="surrogates 97-100%, unseen Lite1/Lite2 87-92% protected after 8 platforms, 39.9 dB, SSIM "
                    "0.982, 31% less change on the flattest quarter than the uniform budget, 5 s/photo on a 2-core "
                    "CPU"),
    Preset("strong", "more budget, draws and steps", eps=8, steps=30, draws=4, attack_size=320, classifier=ENSEMBLE,
           loss="margin", step_rule="scaled",
           measured="surrogates 98-100%, unseen Lite1/Lite2 92-95% protected after 8 platforms, 36.7 dB, "
                    "19 s/photo"),
    Preset("paper", "ComReAdv as published: the whole photo at 224, no draws (lab view only)", eps=5, steps=10,
           draws=0, attack_size=224, classifier="efficientnet_lite0", loss="ce", label_view="attack",
           measured="Lite0 70-80%, unseen 50-60% after 8 platforms, 38.5 dB"),
)}
STRENGTHS = tuple(PRESETS)
DEFAULT_STRENGTH = "balanced"


def preset_config(strength: str = DEFAULT_STRENGTH, **given: Any) -> AttackConfig:
    """The configuration of a strength, with the values the user gave explicitly (None: not given) taking
    precedence: :class:`AttackConfig`'s fields on the user's scales, as for :meth:`AttackConfig.from_user`, and
    :class:`EotSettings`' (``draws``, ...).

    Example:
        >>> preset_config("balanced").eot.draws
        2
        >>> preset_config("balanced", eps=4).eps_255
        4.0
    """
    if strength not in PRESETS:
        raise AttackConfigError(f"unknown strength {strength!r}; available: {', '.join(STRENGTHS)}")
    preset = PRESETS[strength]
    settings = {key: value for key, value in given.items() if value is not None}
    eot_given = {name: settings.pop(name) for name in list(settings) if name in EOT_FIELDS}
    eot = EotSettings(**{"draws": preset.draws, **eot_given})
    values: dict[str, Any] = dict(method=preset.method, eps=preset.eps, through=preset.through,
                                  classifier=preset.classifier, attack_size=preset.attack_size, loss=preset.loss,
                                  budget=preset.budget, stop_after=preset.stop_after, stop_margin=preset.stop_margin,
                                  label_view=preset.label_view, step_rule=preset.step_rule)
    method = settings.get("method", preset.method)
    if method in iterative_methods():  # fgsm takes its one step; the preset's count would be refused
        values["steps"] = preset.steps
        # The preset's step size goes with its own eps and steps; a user's eps or steps rescales it (eps / steps).
        if preset.alpha is not None and "eps" not in settings and "steps" not in settings:
            values["alpha"] = preset.alpha
    values.update(settings)
    return AttackConfig.from_user(eot=eot, strength=strength, **values)


def preset_stop_after(strength: str | None) -> int:
    """The per-photo stopping a strength sets on its own (0 for none or an unknown name): what a configuration's
    ``stop_after`` is when the user did not ask for one.

    Example:
        >>> preset_stop_after("balanced"), preset_stop_after(None)
        (0, 0)
    """
    return preset_own(strength, "stop_after", 0)


def preset_own(strength: str | None, name: str, fallback: Any) -> Any:
    """The value of field ``name`` a strength sets on its own, or ``fallback`` for none or an unknown name (what
    :func:`stopping_asked` and :func:`step_rule_asked` compare a configuration with).

    Example:
        >>> preset_own("balanced", "step_rule", "sign"), preset_own(None, "step_rule", "sign")
        ('scaled', 'sign')
    """
    preset = PRESETS.get(strength or "")
    return getattr(preset, name) if preset is not None else fallback


def stopping_asked(config: AttackConfig) -> bool:
    """Whether ``config``'s per-photo stopping is one the user asked for rather than its preset's own (a
    ``stop_after`` other than :func:`preset_stop_after` of its strength): a backend that cannot stop refuses the
    former and runs the latter as every step; the face cloak refuses the former and ignores the latter.

    Example:
        >>> stopping_asked(preset_config("balanced")), stopping_asked(preset_config("balanced", stop_after=3))
        (False, True)
    """
    return config.stop_after != preset_stop_after(config.strength)


def step_rule_asked(config: AttackConfig) -> bool:
    """Whether ``config``'s step rule is one the user asked for rather than its preset's own (the sign for none or an
    unknown name), as :func:`stopping_asked` tells for stopping: the face-only cloak refuses the former.

    Example:
        >>> step_rule_asked(preset_config("balanced")), step_rule_asked(preset_config("balanced", step_rule="sign"))
        (False, True)
    """
    return config.step_rule != preset_own(config.strength, "step_rule", SIGN_STEP)
