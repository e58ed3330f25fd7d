"""Evaluation protocols (DESIGN §3). The paper protocol: 224×224 photos, cloak, round, real codec, classify."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from comcloak.attacks.loop import AttackConfig, paper_targets, run_attack
from comcloak.codecs import Codec
from comcloak.codecs.pairs import paper_view as resize_square
from comcloak.codecs.tensors import to_tensor, to_uint8

logger = logging.getLogger(__name__)

__all__ = ["PAPER_SIZE", "ProtocolResult", "ProtocolRow", "logits_of", "predict", "resize_square",
           "run_paper_protocol", "to_tensor", "to_uint8"]

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
    targeted: bool
    n_photos: int
    rows: list[ProtocolRow] = field(default_factory=list)
    cloaked: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def rate(self, attack: str, through: str, codec: str) -> float:
        for row in self.rows:
            if (row.attack, row.through, row.codec) == (attack, through, codec):
                return row.success_rate
        raise KeyError(f"no result for attack={attack!r} through={through!r} codec={codec!r}")


def run_paper_protocol(
    classifier: nn.Module,
    photos: Sequence[np.ndarray],
    attacks: Sequence[AttackConfig],
    throughs: dict[str, nn.Module],
    codecs: Sequence[Codec],
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> ProtocolResult:
    """Paper protocol (DESIGN §3) for every (attack, through) pair, each cloak scored against every codec.

    Clean label = top-1 on the 224×224 photo. Untargeted success: label after the codec ≠ clean label;
    targeted success: label after the codec = (clean + 500) mod classes. All ``attacks`` must agree on
    ``targeted``. ``progress`` is called with the number of photos finished for each attack batch.
    """
    targeted_flags = {config.targeted for config in attacks}
    if len(targeted_flags) != 1:
        raise ValueError("all attack configurations of one protocol run must agree on targeted")
    targeted = targeted_flags.pop()
    if not photos:
        raise ValueError("the paper protocol needs at least one photo")
    views = np.stack([resize_square(photo) for photo in photos])
    clean = to_tensor(views, device)
    clean_logits = logits_of(classifier, clean, batch_size)
    clean_labels = clean_logits.argmax(dim=1)
    goal = paper_targets(clean_labels, clean_logits.shape[1]) if targeted else clean_labels
    result = ProtocolResult(targeted=targeted, n_photos=len(photos))
    for config in attacks:
        for through_name, through in throughs.items():
            adversarial = torch.cat([
                _attack_chunk(classifier, chunk, labels, config, through, progress)
                for chunk, labels in zip(clean.split(batch_size), goal.split(batch_size))
            ])
            cloaked = to_uint8(adversarial)
            result.cloaked[(config.method, through_name)] = cloaked
            for codec in codecs:
                received = to_tensor(codec.apply_batch(cloaked), device)
                labels = predict(classifier, received, batch_size)
                hits = labels == goal if targeted else labels != clean_labels
                result.rows.append(ProtocolRow(config.method, through_name, codec.spec, int(hits.sum()), len(hits)))
                logger.info("%s through %s, %s: %d/%d", config.method, through_name, codec.spec,
                            int(hits.sum()), len(hits))
    return result


def _attack_chunk(classifier, chunk, labels, config, through, progress) -> torch.Tensor:
    adversarial = run_attack(classifier, chunk, labels, config, through)
    if progress is not None:
        progress(len(chunk))
    return adversarial
