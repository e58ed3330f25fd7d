"""The one attack configuration (torch-free): what the CLI builds from its options, what ``Cloaker(config=...)``,
the runners, ``comcloak eval``, the protocols and ``comcloak bench`` take, and what ``Cloaker.config`` shows.

The loop's numbers (eps, alpha) are stored on the [0, 1] scale the loop and the exported graph use. Users give them
on the 0-255 scale (``--eps 5``): :meth:`AttackConfig.from_user` is the one place that converts, and
:attr:`AttackConfig.eps_255` / :attr:`AttackConfig.alpha_255` show them back.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from comcloak import defaults
from comcloak.attacks.loss_registry import loss_names
from comcloak.attacks.methods import attack_method_names, find_attack_method
from comcloak.errors import UserError

MIN_ATTACK_SIZE = 16  # pixels; below this the classifiers' strided stages have nothing left to look at
PIXEL_SCALE = 255.0  # the 0-255 scale users give eps and alpha on
MAX_MOMENTUM = 2.0  # MIM's decay factor: Dong et al. study 0-2; beyond it the first steps' signs never change
SEED_RANGE = (-(2**63), 2**63 - 1)  # seeds are hashed as signed 64-bit integers (comcloak.attacks.eot.content_seed)


class AttackConfigError(UserError, ValueError):
    """A user-supplied attack parameter is out of range or inconsistent."""


def require_integer(name: str, value: Any) -> None:
    """Refuse ``value`` unless it is an integer (a bool or a float is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AttackConfigError(f"{name} must be an integer, got {value!r}")


def require_finite(name: str, *values: Any) -> None:
    """Refuse ``values`` unless each is a finite real number: NaN and infinity slip through range comparisons."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise AttackConfigError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class EotSettings:
    """The distribution the robust attack averages over at every step (``comcloak.attacks.eot``).

    Attributes:
        draws: random draws per image and step; 0 turns the expectation off (the paper's attack: the stand-in on the
            whole attack view, every step).
        view_size: the attacker's view the draws resample to (S x S), the classifiers' input.
        rescale_range: the attacker's rescaled shorter side over the crop's side, drawn uniformly: 256/224 is the
            torchvision/timm centre crop; the default (1, 300/224) spans tighter and looser crops.
        whole_image_rate: fraction of draws that resize the whole photo to S x S instead of cropping.
        flip_rate: fraction of draws mirrored left-right.
        downscale_rate, downscale_range: fraction of draws downscaled by a platform first, and by what factor.
        through_rate: fraction of draws that go through a stand-in for the platform's codec: the first
            :attr:`coded_draws` of each image's draws at every step (stratified rather than a coin per draw, so a
            fixed graph runs the stand-ins on those draws only).
    """

    draws: int = 0
    view_size: int = 224
    rescale_range: tuple[float, float] = (1.0, 300 / 224)
    whole_image_rate: float = 0.25
    flip_rate: float = 0.5
    downscale_rate: float = 0.25
    downscale_range: tuple[float, float] = (0.5, 1.0)
    through_rate: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.draws > 0

    @property
    def coded_draws(self) -> int:
        """How many of each step's draws go through a stand-in: ``draws x through_rate``, rounded half up."""
        return int(self.draws * self.through_rate + 0.5)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require_integer("draws", self.draws)
        require_integer("view_size", self.view_size)
        for name in ("whole_image_rate", "flip_rate", "downscale_rate", "through_rate"):
            require_finite(name, getattr(self, name))
        for name in ("rescale_range", "downscale_range"):
            if len(getattr(self, name)) != 2:
                raise AttackConfigError(f"{name} must be a (low, high) pair, got {getattr(self, name)!r}")
            require_finite(name, *getattr(self, name))
        if self.draws < 0:
            raise AttackConfigError(f"draws must be 0 (off) or more, got {self.draws}")
        if self.view_size < MIN_ATTACK_SIZE:
            raise AttackConfigError(
                f"the attacker view must be at least {MIN_ATTACK_SIZE} pixels, got {self.view_size}")
        for name in ("whole_image_rate", "flip_rate", "downscale_rate", "through_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise AttackConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        low, high = self.rescale_range
        if not 1 <= low <= high:
            raise AttackConfigError(f"rescale_range must be increasing and at least 1 (a crop within the photo), got "
                                    f"{self.rescale_range}")
        low, high = self.downscale_range
        if not 0 < low <= high <= 1:
            raise AttackConfigError(f"downscale_range must be within (0, 1], got {self.downscale_range}")


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
    """

    method: str
    eps: float
    steps: int
    alpha: float
    momentum: float
    targeted: bool = False
    target: int | None = None
    through: str = defaults.THROUGH
    classifier: str = defaults.CLASSIFIER
    classifier_weights: str | None = None
    attack_size: int = defaults.ATTACK_SIZE
    seed: int = defaults.SEED
    loss: str = "ce"
    eot: EotSettings = field(default_factory=EotSettings)
    strength: str | None = None

    def __post_init__(self) -> None:
        self.validate()
        for name in ("eps", "alpha", "momentum"):  # one representation (an int 1 and 1.0 hash alike in settings)
            object.__setattr__(self, name, float(getattr(self, name)))

    def validate(self) -> None:
        """Refuse a configuration the loop cannot run as given: each number of the right kind, finite and in range
        (whether it came from the CLI, ``Cloaker(...)``, a preset or ``AttackConfig(...)`` itself)."""
        if self.method not in attack_method_names():
            raise AttackConfigError(f"unknown attack {self.method!r}; available: {', '.join(attack_method_names())}")
        require_finite("eps", self.eps)
        if not 0 < self.eps <= 1:
            raise AttackConfigError(f"eps must be in (0, 1] on the [0, 1] scale, got {self.eps}")
        require_integer("steps", self.steps)
        if self.steps < 1:
            raise AttackConfigError(f"steps must be at least 1, got {self.steps}")
        require_finite("alpha", self.alpha)
        if not 0 < self.alpha <= 1:
            raise AttackConfigError(f"alpha must be in (0, 1] on the [0, 1] scale, got {self.alpha}")
        require_finite("momentum", self.momentum)
        if not 0 <= self.momentum <= MAX_MOMENTUM:
            raise AttackConfigError(f"momentum must be in [0, {MAX_MOMENTUM:g}], got {self.momentum}")
        if self.target is not None:
            if not self.targeted:
                raise AttackConfigError("target is only meaningful with targeted=True")
            require_integer("target", self.target)
            if self.target < 0:
                raise AttackConfigError(f"target must be a class index, got {self.target}")
        require_integer("attack_size", self.attack_size)
        if self.attack_size < MIN_ATTACK_SIZE:
            raise AttackConfigError(f"attack_size must be at least {MIN_ATTACK_SIZE} pixels, got {self.attack_size}")
        require_integer("seed", self.seed)
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise AttackConfigError(f"seed must be a signed 64-bit integer, got {self.seed}")
        if self.loss not in loss_names():
            raise AttackConfigError(f"unknown loss {self.loss!r}; available: {', '.join(loss_names())}")
        if not isinstance(self.eot, EotSettings):
            raise AttackConfigError(f"eot must be EotSettings, got {type(self.eot).__name__}")
        if len(self.classifiers) > 1 and self.classifier_weights is not None:
            raise AttackConfigError("classifier_weights applies to one classifier, not to an ensemble")

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
        ``attack_size``, ``seed``, ``loss``, ``eot``, ``strength``), as for :func:`attack_config`.

        Example:
            >>> AttackConfig.from_user("mim", eps=5).eps_255
            5.0
        """
        if not 0 < eps <= defaults.MAX_EPS:  # the one ceiling of the CLI, the server and the library
            raise AttackConfigError(f"eps must be in (0, {defaults.MAX_EPS:g}] on the 0-255 scale, got {eps}")
        if alpha is not None and not 0 < alpha <= defaults.MAX_EPS:  # --alpha's ceiling too (options.eps_value)
            raise AttackConfigError(f"alpha must be in (0, {defaults.MAX_EPS:g}] on the 0-255 scale, got {alpha}")
        return attack_config(method, eps / PIXEL_SCALE, steps, None if alpha is None else alpha / PIXEL_SCALE,
                             momentum, targeted, **context)


def attack_config(
    method: str,
    eps: float,
    steps: int | None = None,
    alpha: float | None = None,
    momentum: float | None = None,
    targeted: bool = False,
    *,
    target: int | None = None,
    through: str = defaults.THROUGH,
    classifier: str = defaults.CLASSIFIER,
    classifier_weights: str | None = None,
    attack_size: int = defaults.ATTACK_SIZE,
    seed: int = defaults.SEED,
    loss: str = "ce",
    eot: EotSettings | None = None,
    strength: str | None = None,
) -> AttackConfig:
    """Build and validate an :class:`AttackConfig` (eps and alpha on the [0, 1] scale) with the paper's defaults.

    Args:
        method: ``fgsm`` (one step of size eps, no momentum), ``bim`` (μ = 0) or ``mim`` (μ = 1 by default).
        eps: L∞ budget on the [0, 1] scale, in (0, 1].
        steps: defaults to 1 for FGSM and 10 otherwise; FGSM accepts only 1.
        alpha: step size; defaults to eps for FGSM and eps/steps otherwise (the paper's α = ε/10).
        momentum: μ; defaults to 1.0 for MIM and 0 otherwise; only MIM accepts a non-zero value.
        targeted: targeted (descend towards a class) instead of untargeted.
        target, through, classifier, classifier_weights, attack_size, seed, loss, eot, strength: see
            :class:`AttackConfig`.

    Example:
        >>> attack_config("mim", eps=5 / 255)
        AttackConfig(method='mim', eps=0.0196..., steps=10, alpha=0.00196..., momentum=1.0, targeted=False, ...)
    """
    method = method.lower() if isinstance(method, str) else method
    eot = eot if eot is not None else EotSettings()
    context = dict(target=target, through=through, classifier=classifier, classifier_weights=classifier_weights,
                   attack_size=attack_size, seed=seed, loss=loss, eot=eot, strength=strength)
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
