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
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from comcloak.attacks import AttackConfig
from comcloak.attacks.views import view_top_labels
from comcloak.evaluation.archive import CloakRun, FullResolutionQuality, full_resolution_cloaks

logger = logging.getLogger(__name__)


@dataclass
class PlatformRow:
    attack: str
    through: str
    profile: str
    view: str
    classifier: str
    role: str  # "surrogate" (this cloak attacked it), "evaluation" (never attacked) or "unattacked" (not by this one)
    protected: int
    hidden: int
    n: int

    def as_dict(self) -> dict:
        return {"attack": self.attack, "through": self.through, "profile": self.profile, "view": self.view,
                "classifier": self.classifier, "role": self.role, "protect_at_1": self.protected / self.n,
                "hide_at_5": self.hidden / self.n, "n": self.n}


@dataclass
class PlatformResult(FullResolutionQuality):
    n_photos: int = 0
    rows: list[PlatformRow] = field(default_factory=list)
    # (attack, stand-in, profile, view, classifier, photo index) of every cloak whose top-1 stayed the clean one
    unprotected: list[tuple[str, str, str, str, str, int]] = field(default_factory=list)

    def unprotected_per_photo(self, names: Sequence[str] | None = None) -> list[dict]:
        """Each (cloak, profile, view, classifier) that kept the clean top-1, with the photo's index and, given the
        photos' ``names``, its ``name``: which photos a preset leaves exposed, for comparing runs photo by photo."""
        fields_ = ("attack", "through", "profile", "view", "classifier")
        return [{**dict(zip(fields_, key)), "photo": index, **({"name": names[index]} if names is not None else {})}
                for *key, index in self.unprotected]


def row_role(judge_role: str, name: str, config: AttackConfig) -> str:
    """``surrogate`` when this cloak attacked the judge, ``evaluation`` for an evaluation-only judge, ``unattacked``
    for another attack's surrogate."""
    if judge_role == "evaluation":
        return "evaluation"
    return "surrogate" if name in config.classifiers else "unattacked"


def run_platform_protocol(judges: dict[str, tuple[nn.Module, str]], run: CloakRun,
                          views: Sequence[str]) -> PlatformResult:
    """Score full-resolution cloaks after each platform profile (``run.codecs``), in each attacker view, by each
    judge.

    Args:
        judges: classifier name -> (module, role), role ``surrogate`` or ``evaluation``; each row's role is
            :func:`row_role` (whether that cloak attacked the judge).
        run: the photos, attacks and stand-ins (as for the archive protocol: ``comodel:auto`` cloaks per profile
            through its stand-in), the platform profiles or any codec chains, and how to cloak.
        views: attacker views (:data:`comcloak.attacks.views.ATTACKER_VIEWS`).
    """
    photos, profiles, device = run.photos, run.codecs, run.device
    if not photos:
        raise ValueError("the platform protocol needs at least one photo")
    result = PlatformResult(n_photos=len(photos))
    # The clean photo's top-1 under each (profile, view, judge): what a cloak must change.
    clean: dict[tuple[str, str, str], list[int]] = {}
    for profile in profiles:
        received = [profile.apply(photo) for photo in photos]
        for view in views:
            for name, (module, _) in judges.items():
                clean[profile.spec, view, name] = [view_top_labels(module, image, view, device)[0]
                                                   for image in received]
    counts: dict[tuple[str, str, str, str, str], list[int]] = {}
    roles: dict[tuple[str, str, str, str, str], str] = {}
    for config, through_name, group, index, cloak in full_resolution_cloaks(run, result):
        for profile in group:
            received = profile.apply(cloak.cloaked)
            for view in views:
                for name, (judge, _) in judges.items():
                    top = view_top_labels(judge, received, view, device)
                    label = clean[profile.spec, view, name][index]
                    key = (config.strength or config.method, through_name, profile.spec, view, name)
                    roles[key] = row_role(judges[name][1], name, config)
                    tally = counts.setdefault(key, [0, 0])
                    tally[0] += int(top[0] != label)
                    if top[0] == label:
                        result.unprotected.append((*key, index))
                    tally[1] += int(label not in top)
    result.rows = [PlatformRow(*key, roles[key], protected, hidden, len(photos))
                   for key, (protected, hidden) in counts.items()]
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
