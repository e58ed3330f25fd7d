"""How :class:`~comcloak.engine.cloaker.Cloaker`'s arguments become its settings: the attack configuration of its
keywords (:func:`resolve_config`), its protection and face cloak (:func:`resolve_protection`), and the one-line
description its closing table starts with (:func:`describe_cloaker`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from comcloak.attacks import AttackConfig, AttackConfigError
from comcloak.attacks.config import declared_settings, unknown_keywords_error
from comcloak.attacks.faces.settings import FaceCloakConfig
from comcloak.attacks.presets import DEFAULT_STRENGTH, preset_config, step_rule_asked, stopping_asked
from comcloak.engine.protection import PROTECTION_KEYWORDS, Protection
from comcloak.errors import UserError


class CloakerConfigError(UserError, ValueError):
    """A Cloaker argument is invalid (user error)."""


def describe_cloaker(config: AttackConfig, backend: str, precision: str, device: str,
                     faces: FaceCloakConfig | None = None, protect: str = "objects") -> str:
    """The one-line description the closing table starts with: the attack as run and where it runs (and, when faces
    are cloaked, what is protected and the face cloak's preset, eps and steps)."""
    c = config
    face = "" if faces is None else (f"protect={protect!r}, face_preset={faces.attack.strength!r}, "
                                     f"face_eps={faces.attack.eps_255:g}, face_steps={faces.attack.steps}, ")
    return (f"Cloaker({face}strength={c.strength!r}, classifier={c.classifier!r}, through={c.through!r}, "
            f"attack={c.method!r}, eps={c.eps_255:g}, steps={c.steps}, draws={c.eot.draws}, loss={c.loss!r}, "
            f"attack_size={c.attack_size}, targeted={c.targeted}, backend={backend!r}, precision={precision!r}, "
            f"device={device!r})")


def resolve_protection(settings: dict[str, Any], faces: FaceCloakConfig | None,
                       ) -> tuple[Protection, FaceCloakConfig | None]:
    """``(protection, face cloak or None)`` of :class:`Cloaker`'s protection keywords, which are taken out of
    ``settings`` (the rest are attack settings); ``faces``, a face cloak given whole, wins over the preset."""
    given = {name: settings.pop(name) for name in list(settings) if name in PROTECTION_KEYWORDS}
    if faces is not None and not isinstance(faces, FaceCloakConfig):
        raise CloakerConfigError(f"face_config must be a FaceCloakConfig, got {type(faces).__name__}")
    try:
        protection = Protection.from_settings(given)
        if faces is not None and not protection.faces:
            raise CloakerConfigError("face_config applies when faces are cloaked (protect='faces' or 'both'), not "
                                     f"with protect={protection.protect!r}")
        return protection, (faces or protection.face_config()) if protection.faces else None
    except AttackConfigError as error:
        raise CloakerConfigError(str(error)) from None


def resolve_config(config: AttackConfig | None, settings: dict[str, Any], protection: Protection | None = None,
                   ) -> tuple[AttackConfig, nn.Module | None, nn.Module | None]:
    """``(config, classifier module, stand-in module)`` of :class:`Cloaker`'s arguments: ``config`` as given, or the
    one the declared ``settings`` build (``Cloaker(eps=4)``), with ``classifier``/``through`` modules set apart.
    Per-photo stopping (``stop_after``), the growing budget (``eps_start``) and the step rule are the objects cloak's:
    refused, in one line, when ``protection`` has none (the face cloak neither stops photos early nor grows its
    budget, and steps as its face preset does), rather than ignored."""
    declared = declared_settings()
    unknown = [name for name in settings if name not in declared]
    if unknown:
        raise unknown_keywords_error(unknown, declared, CloakerConfigError)
    if config is not None and not isinstance(config, AttackConfig):
        raise CloakerConfigError(f"config must be an AttackConfig, got {type(config).__name__} (a classifier or "
                                 "stand-in is given as classifier=... / through=...)")
    modules = {name: value for name, value in settings.items() if isinstance(value, nn.Module)}
    given = {name: value for name, value in settings.items() if value is not None and name not in modules}
    if config is not None and given:
        raise CloakerConfigError(f"give either config or the attack keyword arguments, not both (got config and "
                                 f"{', '.join(given)})")
    config_given = config
    if config is None:
        if given.get("classifier_weights") is not None and "classifier" in modules:
            raise CloakerConfigError("classifier_weights applies to a classifier given by name, not to a module")
        given.update({name: type(module).__name__ for name, module in modules.items()})  # named in the config
        strength = given.pop("strength", None) or DEFAULT_STRENGTH
        try:
            config = preset_config(strength, **{declared[name].name: value for name, value in given.items()})
        except AttackConfigError as error:
            raise CloakerConfigError(str(error)) from None
    # The face cloak never stops photos early: a stop_after the user asked for is refused, the preset's own is moot.
    asked_stop = ("stop_after" in {declared[name].name for name in given} if config_given is None
                  else stopping_asked(config))
    if config.stop_after and asked_stop and protection is not None and not protection.objects:
        raise CloakerConfigError(f"stop_after applies to the objects cloak, and protect={protection.protect!r} has "
                                 "none (the face cloak does not stop photos early)")
    asked_rule = "step_rule" in given if config_given is None else step_rule_asked(config)
    if asked_rule and protection is not None and not protection.objects:
        raise CloakerConfigError(f"step_rule applies to the objects cloak, and protect={protection.protect!r} has "
                                 "none (the face cloak steps as its face preset does)")
    if config.eps_start is not None and protection is not None and not protection.objects:  # presets never set it
        raise CloakerConfigError(f"eps_start applies to the objects cloak, and protect={protection.protect!r} has "
                                 "none (the face cloak does not grow its budget)")
    return config, modules.get("classifier"), modules.get("through")
