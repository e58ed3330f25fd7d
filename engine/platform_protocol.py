"""The platform protocol (docs/DESIGN.md §3), the one protection is judged by: a full-resolution cloak by the
``Cloaker`` → a platform profile (``facebook``, ``whatsapp``, ...) → an attacker view (``crop``, ``resize``,
``native``) → every judging classifier, the surrogates the cloak attacked and the evaluation-only ones it never saw.

Per (attack, stand-in, profile, view, classifier):

- **protect@1**: the cloak's top-1 differs from the clean photo's top-1 under the same profile and view;
- **hide@5**: the clean photo's top-1 (same profile and view) is not among the cloak's top 5.

Quality is measured at full resolution against the original (PSNR, SSIM, max L∞).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from comcloak.attacks import AttackConfig
from comcloak.attacks.metrics import linf, psnr, ssim
from comcloak.attacks.protocols import cloak_groups
from comcloak.attacks.through import CodecMatchedThroughs
from comcloak.attacks.views import attacker_view
from comcloak.codecs import Codec

logger = logging.getLogger(__name__)

TOP_K = 5


@dataclass
class PlatformRow:
    attack: str
    through: str
    profile: str
    view: str
    classifier: str
    role: str  # "surrogate" (attacked) or "evaluation" (never attacked)
    protected: int
    hidden: int
    n: int

    def as_dict(self) -> dict:
        return {"attack": self.attack, "through": self.through, "profile": self.profile, "view": self.view,
                "classifier": self.classifier, "role": self.role, "protect_at_1": self.protected / self.n,
                "hide_at_5": self.hidden / self.n, "n": self.n}


@dataclass
class PlatformResult:
    n_photos: int
    rows: list[PlatformRow] = field(default_factory=list)
    psnrs: list[float] = field(default_factory=list)
    ssims: list[float] = field(default_factory=list)
    linf_max: int = 0

    def quality(self) -> dict[str, float]:
        """PSNR mean / 5th percentile, SSIM mean and max L-inf of the full-resolution outputs."""
        return {"psnr_mean": float(np.mean(self.psnrs)), "psnr_p05": float(np.percentile(self.psnrs, 5)),
                "ssim_mean": float(np.mean(self.ssims)), "linf_max": float(self.linf_max)}


@torch.no_grad()
def top_labels(classifier: nn.Module, photo: np.ndarray, view: str, device: torch.device | str) -> list[int]:
    """The classifier's top-``TOP_K`` labels for ``photo`` seen through ``view``, best first."""
    logits = classifier(attacker_view(photo, view, classifier, device))
    return logits.topk(TOP_K, dim=1).indices[0].tolist()


def run_platform_protocol(
    judges: dict[str, tuple[nn.Module, str]],
    photos: Sequence[np.ndarray],
    attacks: Sequence[AttackConfig],
    throughs: dict[str, nn.Module | CodecMatchedThroughs],
    profiles: Sequence[Codec],
    views: Sequence[str],
    make_cloaker: Callable[[AttackConfig, nn.Module], object],
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    batch_size: int = 8,
) -> PlatformResult:
    """Score full-resolution cloaks after each platform profile, in each attacker view, by each judge.

    Args:
        judges: classifier name -> (module, role), role ``surrogate`` or ``evaluation``.
        photos: uint8 (H, W, 3) photos at full resolution.
        attacks, throughs: as for the archive protocol (``comodel:auto`` cloaks per profile through its stand-in).
        profiles: platform profiles or any codec chains.
        views: attacker views (:data:`comcloak.attacks.views.ATTACKER_VIEWS`).
        make_cloaker: ``(config, stand-in module) -> Cloaker``; it owns the surrogate, size and backend.
        progress: called with the number of photos cloaked.
    """
    if not photos:
        raise ValueError("the platform protocol needs at least one photo")
    result = PlatformResult(n_photos=len(photos))
    # The clean photo's top-1 under each (profile, view, judge): what a cloak must change.
    clean: dict[tuple[str, str, str], list[int]] = {}
    for profile in profiles:
        received = [profile.apply(photo) for photo in photos]
        for view in views:
            for name, (module, _) in judges.items():
                clean[profile.spec, view, name] = [top_labels(module, image, view, device)[0] for image in received]
    for config in attacks:
        for through_name, through in throughs.items():
            for stand_in, module, group in cloak_groups(through_name, through, profiles):
                cloaker = make_cloaker(replace(config, through=stand_in), module)
                counts = {(p.spec, v, n): [0, 0] for p in group for v in views for n in judges}
                for start in range(0, len(photos), batch_size):
                    chunk = photos[start : start + batch_size]
                    for offset, (photo, cloak) in enumerate(zip(chunk, cloaker.cloak_photos(list(chunk), batch_size))):
                        result.psnrs.append(min(psnr(photo, cloak.cloaked), 99.0))
                        result.ssims.append(ssim(photo, cloak.cloaked))
                        result.linf_max = max(result.linf_max, linf(photo, cloak.cloaked))
                        for profile in group:
                            received = profile.apply(cloak.cloaked)
                            for view in views:
                                for name, (judge, _) in judges.items():
                                    top = top_labels(judge, received, view, device)
                                    label = clean[profile.spec, view, name][start + offset]
                                    tally = counts[profile.spec, view, name]
                                    tally[0] += int(top[0] != label)
                                    tally[1] += int(label not in top)
                    if progress is not None:
                        progress(len(chunk))
                for (profile, view, name), (protected, hidden) in counts.items():
                    result.rows.append(PlatformRow(config.method, through_name, profile, view, name, judges[name][1],
                                                   protected, hidden, len(photos)))
    return result


def format_platform_table(result: PlatformResult, attack: str, through: str) -> str:
    """protect@1 / hide@5 as percentages: one block per view, rows = classifiers, columns = profiles."""
    rows = [r for r in result.rows if (r.attack, r.through) == (attack, through)]
    profiles = list(dict.fromkeys(r.profile for r in rows))
    lines = []
    for view in dict.fromkeys(r.view for r in rows):
        lines.append(f"{attack} through {through}, view {view}: protect@1 / hide@5 (%)")
        header = ["classifier", "role", *profiles]
        table = [header]
        for name in dict.fromkeys(r.classifier for r in rows):
            cells = {r.profile: r for r in rows if r.view == view and r.classifier == name}
            role = next(iter(cells.values())).role
            table.append([name, role, *(f"{100 * cells[p].protected / cells[p].n:.0f} / "
                                        f"{100 * cells[p].hidden / cells[p].n:.0f}" for p in profiles)])
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
        lines.append("")
    return "\n".join(lines).rstrip()
