"""The one attack configuration (torch-free): what the CLI builds from its options, what ``Cloaker(config=...)``,
the runners, ``comcloak eval``, the protocols and ``comcloak bench`` take, and what ``Cloaker.config`` shows.

The loop's numbers (eps, alpha) are stored on the [0, 1] scale the loop and the exported graph use. Users give them
on the 0-255 scale (``--eps 5``): :meth:`AttackConfig.from_user` is the one place that converts, and
:attr:`AttackConfig.eps_255` / :attr:`AttackConfig.alpha_255` show them back.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any

from comcloak import defaults
from comcloak.attacks.eot_settings import EotSettings  # re-exported: the attack configuration's part
from comcloak.attacks.loss_registry import loss_names
from comcloak.attacks.methods import attack_method_names, find_attack_method, iterative_methods, momentum_methods
from comcloak.attacks.settings import (
    AttackConfigError,
    Declared,
    check_declared,
    declared_fields,
    setting,
)
from comcloak.defaults import MIN_ATTACK_SIZE

PIXEL_SCALE = 255.0  # the 0-255 scale users give eps and alpha on
MAX_MOMENTUM = 2.0  # MIM's decay factor: Dong et al. study 0-2; beyond it the first steps' signs never change
SEED_RANGE = (-(2**63), 2**63 - 1)  # seeds are hashed as signed 64-bit integers (comcloak.attacks.eot.content_seed)
UNIFORM_BUDGET = "uniform"  # --budget's default: eps at every pixel, the cloaks of before the budget existed
CAPPED_BUDGET = "capped"  # --budget: eps on texture, less on the photo's flatter regions, never more than eps
BUDGETS = (UNIFORM_BUDGET, "texture", CAPPED_BUDGET)  # eps everywhere, or shaped by the texture (attacks/budget.py)
# The knobs each budget reads; one the chosen budget does not read is refused unless left at its default (not ignored).
BUDGET_KNOBS = {UNIFORM_BUDGET: (), "texture": ("budget_floor", "budget_ceiling", "budget_window", "budget_smoothing"),
                CAPPED_BUDGET: ("budget_floor", "budget_knee", "budget_window", "budget_smoothing")}
WORKING_LABEL_VIEW = "attack"  # --label-view's default: the clean label as the working view shows it (the paper's)
LABEL_VIEWS = (WORKING_LABEL_VIEW, "crop")  # --label-view: that, or the attacker's 256/224 centre crop of the photo
THROUGH_HELP = ("stand-in for the compressor: none, diffjpeg:Q, comodel:CODEC, comodel:PATH, comodel-cubic:CODEC (the "
                "trained cubic rounding), 'mix:A|B', 'eot:A|B'")


def split_classifiers(names: str) -> tuple[str, ...]:
    """The surrogates of a ``--classifier`` value: ``"a,b"`` -> ``("a", "b")``; rejects empty and repeated names."""
    parts = tuple(part.strip() for part in names.split(","))
    if not parts or any(not part for part in parts):
        raise AttackConfigError(f"--classifier needs one name or a comma-separated list of names, got {names!r}")
    if len(set(parts)) != len(parts):
        raise AttackConfigError(f"--classifier names a surrogate twice: {names!r}")
    return parts


@dataclass(frozen=True)
class AttackConfig:
    """One configuration of the L∞ attack (docs/DESIGN.md §2) and of what it attacks.

    Attributes:
        method: ``"fgsm"``, ``"bim"`` or ``"mim"`` (informational; the numbers below define the loop).
        eps: L∞ budget on the [0, 1] scale (the CLI's ``--eps 5`` is ``5/255``).
        steps: number of gradient steps.
        alpha: step size on the [0, 1] scale.
        momentum: μ of MIM; 0 gives BIM (and FGSM with one step of size eps).
        targeted: descend the loss of a target class instead of ascending the loss of the true label.
        target: the target class when targeted; None: the paper's (clean top-1 + 500) mod classes.
        through: the stand-in spec for the compressor (``comodel:jpeg:50``, ``diffjpeg:50``, ``none``, ...).
        classifier: the registered classifier attacked, or several separated by commas (a surrogate ensemble: the
            loss is averaged over them, each pushed away from its own clean label).
        classifier_weights: its weights file (None: the offline pretrained weights; one classifier only).
        attack_size: shorter side of the attack (working) view in pixels.
        seed: seeds the random draws and stand-in picks.
        loss: ``ce`` (cross-entropy, the paper's) or ``margin`` (out of the top-5; ``comcloak.attacks.loss``).
        eot: the expectation over transformations (off when ``eot.draws`` is 0).
        strength: the preset these numbers came from (informational; ``comcloak.attacks.presets``).
        budget: ``uniform`` (the L∞ bound is eps at every pixel), ``texture`` (eps times a per-pixel factor from the
            photo's local luma texture, mean 1 over the photo) or ``capped`` (that texture over ``budget_knee``, at
            most 1: eps wherever the photo has texture, less where it is flat; ``comcloak.attacks.budget``).
        budget_floor, budget_ceiling: the factors of eps on the flattest regions (both shaped budgets) and on the
            busiest texture (``texture`` only). From JND models' texture masking (the visibility threshold rises up
            to about 2-3x with local contrast): not tuned.
        budget_knee: ``capped`` only: the local luma standard deviation ([0, 1] scale, ``Cloaker(budget_knee=3)`` on
            0-255) from which a pixel gets the whole eps; flatter pixels get eps in proportion (a pattern shows on a
            sky or a wall, not on foliage: the contrast masking of JND models).
        budget_window: side, in working-view pixels, of the window the local luma standard deviation is measured
            over (the full-resolution map's grows with the photo).
        budget_smoothing: sigma, in working-view pixels, of the Gaussian that smooths the map (no hard seams
            between budgets); 0: none.
        stop_after: per-photo stopping (``comcloak.attacks.stopping``): a photo stops attacking once its margin
            (:func:`comcloak.attacks.loss.goal_margins`) is at least ``stop_margin`` on every draw and surrogate at
            ``stop_after`` consecutive steps; its cloak is the iterate last checked. 0 (the default): never stop.
        stop_margin: the logit margin a photo must keep on every draw and surrogate to count as safe at a step.
        eps_start: a growing budget (``comcloak.attacks.budget.budget_at``): the L∞ bound of the first update, on
            the [0, 1] scale like eps, growing linearly to eps over ``eps_ramp`` steps, the same for every photo
            still attacked; with ``stop_after`` an easy photo stops with a small budget. None (the default): eps at
            every step.
        eps_ramp: the updates over which the bound grows from ``eps_start`` to eps: the update at step t (0-based)
            is held to ``eps_start + (eps - eps_start) · min(1, t / eps_ramp)``; 0 (the default): over all steps
            (the last update is held to eps).
        step_rule: how a step turns the momentum into a change (:func:`comcloak.kernels.step_direction`): ``sign``
            (every pixel moves by alpha, the paper's) or ``scaled`` (the same L2 length spread by the momentum).
        label_view: where each surrogate's clean label (what an untargeted cloak pushes away from) is read:
            ``attack``, the whole photo at the working size (the paper's), or ``crop``, the attacker's 256/224 centre
            crop of the photo (``comcloak.attacks.views``), the label protection is judged against. On a photo wider
            than square the two can differ, and a cloak pushing the working view's label leaves the attacker's.
    """

    method: str = setting(help="the attack", kind="choice", choices=attack_method_names, keyword="attack",
                          commands=("cloak",), user_default=defaults.ATTACK)
    eps: float = setting(help="L-inf budget on the 0-255 scale", kind="real", low=0, low_open=True, high=1,
                         range_text="in (0, 1] on the [0, 1] scale", commands=("cloak", "eval", "bench"),
                         user_default=defaults.EPS, scale=PIXEL_SCALE, user_high=defaults.MAX_EPS)
    steps: int = setting(help="iterations of bim/mim", kind="int", low=1, commands=("cloak", "eval", "bench"),
                         user_default=defaults.STEPS, note="fgsm takes one", methods=iterative_methods)
    alpha: float = setting(help="step size, 0-255 scale", kind="real", low=0, low_open=True, high=1,
                           range_text="in (0, 1] on the [0, 1] scale", commands=("cloak", "eval", "bench"),
                           default_text="eps/steps", scale=PIXEL_SCALE, user_high=defaults.MAX_EPS,
                           methods=iterative_methods)
    momentum: float = setting(help="MIM momentum mu", kind="real", low=0, high=MAX_MOMENTUM,
                              commands=("cloak", "eval"), default_text="1", note="MIM only", methods=momentum_methods)
    targeted: bool = setting(False, "aim at a class: --target, or the paper's (clean + 500) mod 1000", kind="flag",
                             commands=("cloak", "eval", "bench"))
    target: int | None = setting(None, "target class index (implies --targeted)", kind="int", low=0,
                                 range_text="a class index", commands=("cloak", "bench"))
    through: str = setting(defaults.THROUGH, THROUGH_HELP, commands=("cloak", "bench"))
    classifier: str = setting(defaults.CLASSIFIER, "surrogate classifier(s) attacked, comma-separated for an ensemble "
                                                   "whose loss is averaged", group="models", note="pretrained, offline",
                              commands=("cloak", "eval", "bench"))
    classifier_weights: str | None = setting(
        None, "weights file for the classifier (required for resnet50; safetensors or state dict)", group="models",
        metavar="PATH", commands=("cloak", "eval", "bench"))
    attack_size: int = setting(defaults.ATTACK_SIZE, "shorter side of the working view the cloak is computed on, "
                                                     "in pixels", kind="int", low=MIN_ATTACK_SIZE,
                               range_text=f"at least {MIN_ATTACK_SIZE} pixels", commands=("cloak",))
    seed: int = setting(defaults.SEED, "seed for the random draws and stand-in picks", kind="int", low=SEED_RANGE[0],
                        high=SEED_RANGE[1], range_text="a signed 64-bit integer", commands=("cloak", "eval"))
    loss: str = setting("ce", "ce (cross-entropy) or margin (push the clean label out of the top-5)", kind="choice",
                        choices=loss_names, commands=("cloak",))
    eot: EotSettings = field(default_factory=EotSettings)  # its fields are settings of their own
    strength: str | None = setting(None, "the preset these numbers came from")
    budget: str = setting(UNIFORM_BUDGET, "the per-pixel L-inf budget: uniform (eps everywhere), texture (less on "
                                          "flat regions, more on texture, eps on average) or capped (eps on texture, "
                                          "less on flat regions)", kind="choice",
                          choices=BUDGETS, commands=("cloak", "eval", "bench"))
    budget_floor: float = setting(0.25, "the shaped budget's factor of eps on the flattest regions", kind="real",
                                  low=0, low_open=True, high=1)
    budget_ceiling: float = setting(2.0, "the texture budget's factor of eps on the busiest texture", kind="real",
                                    low=1, high=4)
    budget_knee: float = setting(3 / PIXEL_SCALE, "the capped budget's knee: the local luma standard deviation, "
                                                  "0-255 scale, from which a pixel gets the whole eps", kind="real",
                                 low=0, low_open=True, high=1, range_text="in (0, 1] on the [0, 1] scale",
                                 scale=PIXEL_SCALE, user_high=PIXEL_SCALE)
    budget_window: int = setting(7, "side of the texture budget's window, working-view pixels", kind="int", low=1,
                                 range_text="at least 1 pixel")
    budget_smoothing: float = setting(2.0, "sigma of the texture budget's smoothing, working-view pixels; 0: none",
                                      kind="real", low=0, high=16)
    stop_after: int = setting(0, "stop attacking a photo once it is protected with --stop-margin on every draw and "
                                 "surrogate at this many consecutive steps; 0: never stop", kind="int", low=0,
                              range_text="0 (off) or more steps", commands=("cloak", "eval", "bench"))
    step_rule: str = setting(defaults.SIGN_STEP, "how each step moves the pixels: sign (each by the step size, the "
                                                 "paper's) or scaled (in proportion to the momentum, the same L2 "
                                                 "length: less change where the gradient is weak)", kind="choice",
                             choices=defaults.STEP_RULES, commands=("cloak", "eval", "bench"))
    label_view: str = setting(WORKING_LABEL_VIEW, "where the clean label the cloak pushes away from is read: attack "
                                                  "(the whole photo at the working size) or crop (the attacker's "
                                                  "256/224 centre crop)", kind="choice", choices=LABEL_VIEWS,
                              commands=("cloak", "eval", "bench"))
    stop_margin: float = setting(1.0, "the logit margin (best other class over the clean one; the target over the "
                                      "best other when targeted) per-photo stopping asks of every draw and surrogate",
                                 kind="real", low=0, high=100, commands=("cloak", "eval", "bench"))
    eps_start: float | None = setting(
        None, "a growing budget: the L-inf bound of the first step on the 0-255 scale, growing to --eps over "
              "--eps-ramp steps (with --stop-after, an easy photo stops with less change); default: --eps throughout",
        kind="real", low=0, low_open=True, high=1, range_text="in (0, 1] on the [0, 1] scale",
        commands=("cloak", "eval", "bench"), scale=PIXEL_SCALE, user_high=defaults.MAX_EPS)
    eps_ramp: int = setting(0, "steps over which the bound grows from --eps-start to --eps; 0: over all steps",
                            kind="int", low=0, range_text="0 (all steps) or more steps",
                            commands=("cloak", "eval", "bench"))

    def __post_init__(self) -> None:
        self.validate()
        for name in ("eps", "alpha", "momentum"):  # one representation (an int 1 and 1.0 hash alike in settings)
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.eps_start is not None:
            object.__setattr__(self, "eps_start", float(self.eps_start))

    def validate(self) -> None:
        """Refuse a configuration the loop cannot run as given: each setting of its declared kind and range
        (whether it came from the CLI, ``Cloaker(...)``, a preset or ``AttackConfig(...)`` itself), and the
        combinations that do not fit together."""
        check_declared(self)
        if self.target is not None and not self.targeted:
            raise AttackConfigError("target is only meaningful with targeted=True")
        if not isinstance(self.eot, EotSettings):
            raise AttackConfigError(f"eot must be EotSettings, got {type(self.eot).__name__}")
        if len(self.classifiers) > 1 and self.classifier_weights is not None:
            raise AttackConfigError("classifier_weights applies to one classifier, not to an ensemble")
        if self.eps_start is not None and self.eps_start > self.eps:
            raise AttackConfigError(f"eps_start ({self.eps_start * PIXEL_SCALE:g}) must be at most eps "
                                    f"({self.eps * PIXEL_SCALE:g}): the budget grows to eps")
        if self.eps_ramp and self.eps_start is None:
            raise AttackConfigError("eps_ramp needs eps_start (the bound it grows from)")
        self.refuse_unread_budget_knobs()

    def refuse_unread_budget_knobs(self) -> None:
        """A shaped budget's knob set away from its default under a budget that does not read it (``budget_knee``
        under ``texture``, ``budget_ceiling`` under ``capped``, any under ``uniform``) is refused, not ignored."""
        read = BUDGET_KNOBS[self.budget]
        for knob in sorted(set().union(*BUDGET_KNOBS.values()) - set(read)):
            if getattr(self, knob) != field_default(knob):
                users = [name for name, knobs in BUDGET_KNOBS.items() if knob in knobs]
                raise AttackConfigError(f"{knob} applies to the {' and '.join(users)} budget"
                                        f"{'s' if len(users) > 1 else ''}, not to budget {self.budget!r}")

    @property
    def ramped(self) -> bool:
        """Whether the budget grows over the steps (``eps_start`` below eps)."""
        return self.eps_start is not None and self.eps_start < self.eps

    @property
    def classifiers(self) -> tuple[str, ...]:
        """The surrogate names (one, or the ensemble's)."""
        return split_classifiers(self.classifier)

    @property
    def eps_255(self) -> float:
        """eps on the 0-255 scale users give it on."""
        return self.eps * PIXEL_SCALE

    @property
    def alpha_255(self) -> float:
        """alpha on the 0-255 scale."""
        return self.alpha * PIXEL_SCALE

    @classmethod
    def from_user(
        cls,
        method: str = defaults.ATTACK,
        eps: float = defaults.EPS,
        steps: int | None = None,
        alpha: float | None = None,
        momentum: float | None = None,
        targeted: bool = False,
        **context: Any,
    ) -> AttackConfig:
        """The configuration from values on the user's scales: ``eps`` and ``alpha`` on 0-255 (converted here, once);
        the other arguments, and ``context`` (``target``, ``through``, ``classifier``, ``classifier_weights``,
        ``attack_size``, ``seed``, ``loss``, ``eot``, ``strength``, ...; ``eps_start`` on 0-255 too), as for
        :func:`attack_config`.

        Example:
            >>> AttackConfig.from_user("mim", eps=5).eps_255
            5.0
        """
        values = dict(method=method, eps=eps, steps=steps, alpha=alpha, momentum=momentum, targeted=targeted)
        for entry in declared_settings().values():  # eps, alpha, eps_start: the one ceiling of CLI, server, library
            scaled = values if entry.name in values else context
            if entry.setting.scale != 1 and scaled.get(entry.name) is not None:
                scaled[entry.name] = from_user_scale(entry, scaled[entry.name])
        return attack_config(**values, **context)


def field_default(name: str) -> Any:
    """The default of :class:`AttackConfig`'s field ``name`` (a budget knob's, ...).

    Example:
        >>> field_default("budget_window")
        7
    """
    return _field_defaults()[name]


@functools.cache
def _field_defaults() -> dict[str, Any]:
    """AttackConfig's field defaults by name, built once (every configuration's validation reads the budget knobs')."""
    return {entry.name: entry.default for entry in fields(AttackConfig)}


def from_user_scale(entry: Declared, value: float) -> float:
    """``value`` on the user's scale (eps 5 on 0-255) on the configuration's (5/255), checked against the user's
    ceiling (``--eps``'s too)."""
    declared = entry.setting
    low = (declared.low or 0) * declared.scale
    if not ((value > low if declared.low_open else value >= low) and value <= declared.user_high):
        raise AttackConfigError(f"{entry.name} must be {user_range(entry)}, got {value}")
    return value / declared.scale


def user_range(entry: Declared) -> str:
    """A setting's range on the user's scale in words: ``in (0, 64] on the 0-255 scale``."""
    declared = entry.setting
    return (f"in {'(' if declared.low_open else '['}{(declared.low or 0) * declared.scale:g}, "
            f"{declared.user_high:g}] on the 0-{declared.scale:g} scale")


@functools.cache
def declared_settings() -> dict[str, Declared]:
    """Every declared setting by the keyword users give it as (``attack``, ``eps``, ..., ``draws``): AttackConfig's,
    then those of its nested EotSettings (``Cloaker(draws=2)`` sets ``config.eot.draws``).

    Example:
        >>> declared_settings()["attack"].name, declared_settings()["draws"].owner.__name__
        ('method', 'EotSettings')
    """
    return {entry.keyword: entry for entry in (*declared_fields(AttackConfig), *declared_fields(EotSettings))}


def unknown_keywords_error(unknown: Any, valid: Any, error: type[Exception] = AttackConfigError) -> Exception:
    """The one-line error of keywords that are not declared settings, listing the valid ones."""
    return error(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; valid: "
                 f"{', '.join(valid)}")


def attack_config(
    method: str,
    eps: float,
    steps: int | None = None,
    alpha: float | None = None,
    momentum: float | None = None,
    targeted: bool = False,
    **context: Any,
) -> AttackConfig:
    """Build and validate an :class:`AttackConfig` (eps and alpha on the [0, 1] scale) with the paper's defaults.

    Args:
        method: ``fgsm`` (one step of size eps, no momentum), ``bim`` (μ = 0) or ``mim`` (μ = 1 by default).
        eps: L∞ budget on the [0, 1] scale, in (0, 1].
        steps: defaults to 1 for FGSM and 10 otherwise; FGSM accepts only 1.
        alpha: step size; defaults to eps for FGSM and eps/steps otherwise (the paper's α = ε/10).
        momentum: μ; defaults to 1.0 for MIM and 0 otherwise; only MIM accepts a non-zero value.
        targeted: targeted (descend towards a class) instead of untargeted.
        context: any other field of :class:`AttackConfig` (``target``, ``through``, ``classifier``, ``seed``,
            ``eot`` (None: the default), ...); what is not given takes the field's declared default.

    Example:
        >>> attack_config("mim", eps=5 / 255)
        AttackConfig(method='mim', eps=0.0196..., steps=10, alpha=0.00196..., momentum=1.0, targeted=False, ...)
    """
    valid = [item.name for item in fields(AttackConfig)][6:]  # the six above are this function's own
    unknown = [name for name in context if name not in valid]
    if unknown:
        raise unknown_keywords_error(unknown, valid)
    if context.get("eot", EotSettings()) is None:
        context["eot"] = EotSettings()
    method = method.lower() if isinstance(method, str) else method
    entry = find_attack_method(method)  # its defaults (comcloak.attacks.methods); None: validate names the known ones
    if entry is not None:
        steps, alpha, momentum = entry.resolve(eps, steps, alpha, momentum)
    return AttackConfig(method, eps, steps, alpha, momentum, targeted, **context)


def __getattr__(name: str) -> Any:
    # The registered names, read when asked for (a plugin or a test may register more): comcloak.attacks.methods
    # and comcloak.attacks.loss_registry.
    if name == "ATTACK_METHODS":
        return attack_method_names()
    if name == "LOSSES":
        return loss_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
