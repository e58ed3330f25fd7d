"""Evaluation protocols (docs/DESIGN.md §3). The paper protocol: 224×224 photos, cloak, round, real codec, classify."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from comcloak.attacks.loop import AttackConfig, paper_targets, run_attack
from comcloak.attacks.metrics import PSNR_CAP, linf, psnr, ssim
from comcloak.attacks.success import attack_succeeded
from comcloak.attacks.through import CodecMatchedThroughs
from comcloak.codecs import Codec
from comcloak.codecs.pairs import paper_view as resize_square
from comcloak.codecs.tensors import to_tensor, to_uint8

logger = logging.getLogger(__name__)

__all__ = ["PAPER_SIZE", "ProtocolResult", "ProtocolRow", "cloak_groups", "cloak_passes", "common_targeted",
           "logits_of", "predict", "resize_square", "run_paper_protocol"]

PAPER_SIZE = 224


@torch.no_grad()
def logits_of(classifier: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Logits of float NCHW images, computed in chunks of ``batch_size``."""
    return torch.cat([classifier(chunk) for chunk in images.split(batch_size)])


def predict(classifier: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Top-1 labels of float NCHW images, computed in chunks of ``batch_size``."""
    return logits_of(classifier, images, batch_size).argmax(dim=1)


@dataclass
class ProtocolRow:
    attack: str
    through: str
    codec: str
    successes: int
    n: int

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    def as_dict(self) -> dict:
        return {"attack": self.attack, "through": self.through, "codec": self.codec,
                "success_rate": self.success_rate, "n": self.n}


@dataclass
class ProtocolResult:
    """Success counts per (attack, through, codec), and every cloak, keyed by (attack, stand-in spec).

    For ``comodel:auto`` the cloaks are keyed by the stand-in each codec resolved to (``comodel:jpeg:50``, ...).
    """

    targeted: bool
    n_photos: int
    rows: list[ProtocolRow] = field(default_factory=list)
    cloaked: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    clean_views: np.ndarray | None = None  # uint8 (N, 224, 224, 3), what was cloaked
    # codec -> photos whose *uncloaked* label survives the codec: how much the codec alone changes the labels
    clean_agreement: dict[str, int] = field(default_factory=dict)

    def quality(self) -> dict[str, float]:
        """Image quality over every cloak against its clean view: mean and 5th-percentile PSNR (dB), mean SSIM,
        largest L-inf change (0-255)."""
        if self.clean_views is None or not self.cloaked:
            raise ValueError("no cloaks to measure")
        psnrs, ssims, worst = [], [], 0
        for cloaks in self.cloaked.values():
            for original, cloak in zip(self.clean_views, cloaks):
                psnrs.append(min(psnr(original, cloak), PSNR_CAP))
                ssims.append(ssim(original, cloak))
                worst = max(worst, linf(original, cloak))
        return {"psnr_mean": float(np.mean(psnrs)), "psnr_p05": float(np.percentile(psnrs, 5)),
                "ssim_mean": float(np.mean(ssims)), "linf_max": float(worst)}

    def rate(self, attack: str, through: str, codec: str) -> float:
        for row in self.rows:
            if (row.attack, row.through, row.codec) == (attack, through, codec):
                return row.success_rate
        raise KeyError(f"no result for attack={attack!r} through={through!r} codec={codec!r}")


def run_paper_protocol(
    classifier: nn.Module,
    photos: Sequence[np.ndarray],
    attacks: Sequence[AttackConfig],
    throughs: dict[str, nn.Module | CodecMatchedThroughs],
    codecs: Sequence[Codec],
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> ProtocolResult:
    """Paper protocol (docs/DESIGN.md §3) for every (attack, through) pair, each cloak scored against every codec.

    Clean label = top-1 on the 224×224 photo. Untargeted success: label after the codec ≠ clean label;
    targeted success: label after the codec = (clean + 500) mod classes. All ``attacks`` must agree on
    ``targeted``. ``progress`` is called with the number of photos finished for each attack batch.

    A :class:`CodecMatchedThroughs` value (``comodel:auto``) cloaks for each codec through the stand-in matched to
    it; codecs that share a stand-in share the cloak.
    """
    targeted = common_targeted(attacks)
    if not photos:
        raise ValueError("the paper protocol needs at least one photo")
    views = np.stack([resize_square(photo) for photo in photos])
    clean = to_tensor(views, device)
    clean_logits = logits_of(classifier, clean, batch_size)
    clean_labels = clean_logits.argmax(dim=1)
    goal = paper_targets(clean_labels, clean_logits.shape[1]) if targeted else clean_labels
    result = ProtocolResult(targeted=targeted, n_photos=len(photos), clean_views=views)
    for codec in codecs:
        labels = predict(classifier, to_tensor(codec.apply_batch(views), device), batch_size)
        result.clean_agreement[codec.spec] = int((labels == clean_labels).sum())
    scoring = Scoring(classifier, goal, clean_labels, targeted, batch_size, device)
    for config in attacks:
        for through_name, through in throughs.items():
            for stand_in, module, group in cloak_groups(through_name, through, codecs):
                adversarial = torch.cat([
                    _attack_chunk(classifier, chunk, labels, config, module, progress)
                    for chunk, labels in zip(clean.split(batch_size), goal.split(batch_size))
                ])
                cloaked = to_uint8(adversarial)
                result.cloaked[(config.method, stand_in)] = cloaked
                _score(result, scoring, cloaked, group, config.method, through_name)
    return result


def common_targeted(attacks: Sequence[AttackConfig]) -> bool:
    """Whether the attacks of one protocol run are targeted; they must all agree."""
    flags = {config.targeted for config in attacks}
    if len(flags) != 1:
        raise ValueError("all attack configurations of one protocol run must agree on targeted")
    return flags.pop()


def cloak_groups(
    through_name: str, through: nn.Module | CodecMatchedThroughs, codecs: Sequence[Codec]
) -> list[tuple[str, nn.Module, list[Codec]]]:
    """(stand-in spec, module, codecs scored on its cloak): one group, or one per distinct matched stand-in."""
    if not isinstance(through, CodecMatchedThroughs):
        return [(through_name, through, list(codecs))]
    groups: dict[str, tuple[nn.Module, list[Codec]]] = {}
    for codec in codecs:
        spec, module = through.for_codec(codec.spec)
        groups.setdefault(spec, (module, []))[1].append(codec)
    return [(spec, module, group) for spec, (module, group) in groups.items()]


def cloak_passes(throughs: dict[str, nn.Module | CodecMatchedThroughs], codecs: Sequence[Codec]) -> int:
    """How many times each photo is cloaked per attack (for progress totals)."""
    return sum(len(cloak_groups(name, through, codecs)) for name, through in throughs.items())


@dataclass(frozen=True)
class Scoring:
    """How the paper protocol scores a cloak: its judge, the goals and clean labels (N,), and where."""

    classifier: nn.Module
    goal: torch.Tensor
    clean_labels: torch.Tensor
    targeted: bool
    batch_size: int
    device: torch.device | str


def _score(result: ProtocolResult, scoring: Scoring, cloaked: np.ndarray, codecs: Sequence[Codec], method: str,
           through_name: str) -> None:
    for codec in codecs:
        received = to_tensor(codec.apply_batch(cloaked), scoring.device)
        labels = predict(scoring.classifier, received, scoring.batch_size)
        hits = attack_succeeded(labels, scoring.goal, scoring.clean_labels, scoring.targeted)
        result.rows.append(ProtocolRow(method, through_name, codec.spec, int(hits.sum()), len(hits)))
        logger.info("%s through %s, %s: %d/%d", method, through_name, codec.spec, int(hits.sum()), len(hits))


def _attack_chunk(classifier, chunk, labels, config, through, progress) -> torch.Tensor:
    adversarial = run_attack(classifier, chunk, labels, config, through)
    if progress is not None:
        progress(len(chunk))
    return adversarial
