"""The exported step graph's I/O schema (docs/DESIGN.md §4): its input and output names, their shapes, the layout
stored in its metadata, and :class:`StepSpec`, what the step computes beyond its models and size.

Every runner of an exported step (ONNX Runtime, TensorRT) and the export itself read the graph's tensors through
these names; a robust step (``eot.draws`` > 0) adds the draw's tensors (``comcloak.attacks.eot.DRAW_INPUTS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import torch

from comcloak.attacks.config import AttackConfig, EotSettings
from comcloak.attacks.eot import BLOCK_INPUTS, DRAW_INPUTS, DrawSampler
from comcloak.attacks.loss import goal_weights
from comcloak.defaults import SIGN_STEP

from .optional import import_optional

# The first inputs of every step graph, the face step's too (export/face_step.py: its budget comes after its draws).
STEP_INPUTS = ("x", "x0", "m", "w", "eps", "alpha", "mu")
# The classifier step's; a robust one adds DRAW_INPUTS. ``budget`` (N, 1, H, W): the per-pixel factors of eps and
# alpha (all ones under the uniform budget, the texture map under --budget texture; graph format 5).
INPUT_NAMES = (*STEP_INPUTS, "budget")
OUTPUT_NAMES = ("x_next", "m_next", "logits", "loss")
# Metadata key of a robust graph whose ``logits`` are each draw's, (N, M, D, K) (graph format 6; averaged before).
LOGITS_PER_DRAW = "logits_per_draw"
BATCHED = ("x", "x0", "m", "w", "budget", *DRAW_INPUTS, *BLOCK_INPUTS)
# The iterate and momentum feed the next step: x_next -> x, m_next -> m (ping-pong buffers in the runners).
CARRIED = {"x_next": "x", "m_next": "m"}
SCALARS = ("eps", "alpha", "mu")
METADATA_PREFIX = "comcloak."
EPS_SEMANTICS = (
    "x, x0 in [0,1] NCHW; eps and alpha on the [0,1] scale (comcloak's --eps 5 is 5/255), each pixel's scaled by "
    "budget (N,1,H,W: ones for the uniform budget); "
    "w = one-hot target (targeted) or minus one-hot clean label (untargeted); "
    "loss = -sum(w * log_softmax(logits)) per image, always descended: "
    "m_next = mu*m + g/mean|g|, x_next = clip(x - alpha*budget*sign(m_next), max(x0-eps*budget,0), "
    "min(x0+eps*budget,1)); with step_rule=scaled, m_next*|sign(m_next)|_2/|m_next|_2 per image instead of sign(m_next)"
)


@dataclass(frozen=True)
class StepLayout:
    """What a step graph computes beyond its size: M surrogates, D draws per step over J stand-ins resampled to an
    S x S attacker view (D = 0: the paper's step, no draws), and the loss. Stored in the graph's metadata."""

    surrogates: int = 1
    draws: int = 0
    stand_ins: int = 0
    view_size: int = 224
    loss: str = "ce"
    coded_draws: int = 0
    # The draws move blocks (EotSettings.block_transforms): BLOCK_INPUTS follow DRAW_INPUTS. Keyword-only, so the
    # positional fields of a subclass (the face step's layout) keep their places.
    blocks: bool = field(default=False, kw_only=True)
    # The update's direction (comcloak.kernels.step_direction); graphs exported before it existed step by the sign.
    step_rule: str = field(default=SIGN_STEP, kw_only=True)

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES + (DRAW_INPUTS + (BLOCK_INPUTS if self.blocks else ()) if self.draws else ())

    @property
    def logits_per_draw(self) -> bool:
        """Whether the ``logits`` output is each draw's, (N, M, D, K): a robust classifier step (graph format 6; what
        per-photo stopping reads), else (N, M, K)."""
        return self.draws > 0

    def metadata(self) -> dict[str, str]:
        return {"surrogates": str(self.surrogates), "draws": str(self.draws), "stand_ins": str(self.stand_ins),
                "view_size": str(self.view_size), "loss": self.loss, "coded_draws": str(self.coded_draws),
                "blocks": str(int(self.blocks)), "step_rule": self.step_rule}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> StepLayout:
        defaults = cls()
        return cls(int(metadata.get("surrogates", defaults.surrogates)), int(metadata.get("draws", defaults.draws)),
                   int(metadata.get("stand_ins", defaults.stand_ins)),
                   int(metadata.get("view_size", defaults.view_size)), metadata.get("loss", defaults.loss),
                   int(metadata.get("coded_draws", defaults.coded_draws)), blocks=metadata.get("blocks", "0") == "1",
                   step_rule=metadata.get("step_rule", SIGN_STEP))


@dataclass(frozen=True)
class StepSpec:
    """The part of an :class:`~comcloak.attacks.config.AttackConfig` an exported step graph is built from: the loss
    (``ce`` or ``margin``), the robust attack's draws (``eot.draws`` > 0: a robust step with the draws as inputs) and
    the update's step rule.
    The rest of the configuration (eps, alpha, momentum, the goal) is fed to the graph at run time.

    Example:
        >>> spec = StepSpec.from_config(preset_config("balanced"))
        >>> spec.layout(surrogates=2, stand_ins=1).input_names[-1]
        'post_w'
    """

    loss: str = "ce"
    eot: EotSettings = field(default_factory=EotSettings)
    step_rule: str = SIGN_STEP

    @classmethod
    def from_config(cls, config: AttackConfig) -> StepSpec:
        return cls(config.loss, config.eot, config.step_rule)

    def rule_key(self) -> dict[str, str]:
        """The step rule's part of a cached graph's key: nothing for the sign (the keys of before it existed)."""
        return {} if self.step_rule == SIGN_STEP else {"step_rule": self.step_rule}

    def layout(self, surrogates: int, stand_ins: int) -> StepLayout:
        """The graph's layout for ``surrogates`` classifiers and ``stand_ins`` stand-ins (used only with draws)."""
        eot = self.eot
        if eot.draws:
            return StepLayout(surrogates, eot.draws, stand_ins, eot.view_size, self.loss, eot.coded_draws,
                              blocks=eot.block_transforms, step_rule=self.step_rule)
        return StepLayout(surrogates, loss=self.loss, step_rule=self.step_rule)


def step_tensor_shapes(batch: int, height: int, width: int, classes: int,
                       layout: StepLayout = StepLayout()) -> dict[str, tuple[int, ...]]:
    """The shape of every input and output of the exported step graph, by name: the graph's I/O schema."""
    image = (batch, 3, height, width)
    scores = (batch, layout.surrogates, classes)
    shapes = {"x": image, "x0": image, "m": image, "w": scores, **{name: (1,) for name in SCALARS},
              "budget": (batch, 1, height, width),
              "x_next": image, "m_next": image, "logits": scores, "loss": (batch,)}
    if layout.draws:
        draws, view = layout.draws, layout.view_size
        if layout.logits_per_draw:  # each draw's (graph format 6)
            shapes["logits"] = (batch, layout.surrogates, draws, classes)
        shapes.update(pre_h=(batch, draws, height, height), pre_w=(batch, draws, width, width),
                      mix=(batch, draws, layout.stand_ins + 1), post_h=(batch, draws, view, height),
                      post_w=(batch, draws, view, width))
        if layout.blocks:
            shapes.update(blocks=(batch, draws, view * view), blocks_inverse=(batch, draws, view * view))
    return shapes


def example_inputs(batch: int, height: int, width: int, classes: int, generator: torch.Generator,
                   layout: StepLayout = StepLayout(), eot: EotSettings | None = None) -> tuple[torch.Tensor, ...]:
    """Random inputs of a step graph in :attr:`StepLayout.input_names` order (the export's example and the
    self-check's images): images near each other within 8/255, random goals, targeted or not, a random per-pixel
    budget in [0.25, 2] (the texture budget's default range: the check covers the per-pixel bound) and fresh draws.
    They are drawn from ``generator`` in a fixed order, so a seed gives the same inputs."""
    x0 = torch.rand(batch, 3, height, width, generator=generator)
    x = (x0 + (torch.rand(x0.shape, generator=generator) - 0.5) * (8 / 255)).clamp(0, 1)
    goal = torch.randint(classes, (batch, layout.surrogates), generator=generator)
    w = goal_weights(goal, classes, targeted=bool(torch.rand(1, generator=generator) < 0.5))
    scalars = (torch.tensor([5 / 255]), torch.tensor([0.5 / 255]), torch.tensor([0.0]))
    budget = 0.25 + 1.75 * torch.rand(batch, 1, height, width, generator=generator)
    inputs = (x, x0, torch.zeros_like(x0), w, *scalars, budget)
    if layout.draws:
        seed = int(torch.randint(2**31, (1,), generator=generator))
        settings = replace(eot or EotSettings(), draws=layout.draws, view_size=layout.view_size)
        inputs += tuple(DrawSampler(settings, layout.stand_ins, seed).sample(batch, height, width).tensors().values())
    return inputs


def read_export_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``comcloak.*`` metadata of an exported step graph (prefix removed)."""
    onnx = import_optional("onnx")
    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.key[len(METADATA_PREFIX):]: entry.value
        for entry in model.metadata_props
        if entry.key.startswith(METADATA_PREFIX)
    }
