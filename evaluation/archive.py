"""The archive protocol (docs/DESIGN.md §3): cloak full-resolution photos, pass them through a platform chain, classify
them the way an attacker would.

Each photo is cloaked at full resolution by a :class:`comcloak.engine.cloaker.Cloaker` (the attack view, the
upsampled perturbation, rounding), then compressed by the platform chain (e.g. ``resize:2048+jpeg:85``), then
prepared as an attacker does (shorter side resized to 256, centre crop 224) and classified. Untargeted success: the
top-1 differs from the clean photo's top-1 under the same chain. Targeted success: the top-1 is the cloak's target.
Quality: PSNR, SSIM, max L-inf and the flat-quarter RMS of the full-resolution output against the original
(``comcloak.attacks.metrics.photo_quality``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from comcloak.attacks import AttackConfig
from comcloak.attacks.metrics import photo_quality
from comcloak.attacks.success import attack_succeeded
from comcloak.attacks.through import CodecMatchedThroughs
from comcloak.attacks.views import view_top_labels
from comcloak.codecs import Codec
from comcloak.engine.cloaker import CloakResult
from comcloak.evaluation.paper import ProtocolRow, cloak_groups, common_targeted

logger = logging.getLogger(__name__)


@dataclass
class FullResolutionQuality:
    """PSNR, SSIM, L-inf and flat-quarter RMS of full-resolution cloaks against their originals, accumulated cloak by
    cloak (``comcloak.attacks.metrics.photo_quality``): one record per cloak, in the order the cloaks were made."""

    photos: list[dict[str, float]] = field(default_factory=list)  # photo_quality of each cloak
    kinds: list[str] = field(default_factory=list)  # which attack (and stand-in) made each cloak
    indices: list[int] = field(default_factory=list)  # which photo (its index in the run's photos) each cloak is
    cloak_seconds: dict[str, float] = field(default_factory=dict)  # time in Cloaker.cloak_photos, per kind
    steps_used: list[int | None] = field(default_factory=list)  # attack steps each cloak ran (per-photo stopping)

    def add(self, original: np.ndarray, cloaked: np.ndarray, kind: str = "", index: int | None = None,
            steps_used: int | None = None) -> None:
        self.photos.append(photo_quality(original, cloaked))
        self.kinds.append(kind)
        self.indices.append(len(self.indices) if index is None else index)
        self.steps_used.append(steps_used)

    def steps(self, kind: str | None = None) -> dict[str, float]:
        """The attack steps the cloaks (of one ``kind``) used: ``steps_used_mean``, ``_min``, ``_max``; empty when
        none recorded them (a faces-only cloak).

        Example:
            >>> quality.steps("balanced through comodel:jpeg:50")
            {'steps_used_mean': 7.4, 'steps_used_min': 3, 'steps_used_max': 10}
        """
        steps = [used for name, used in zip(self.kinds, self.steps_used)
                 if (kind is None or name == kind) and used is not None]
        if not steps:
            return {}
        return {"steps_used_mean": float(np.mean(steps)), "steps_used_min": min(steps),
                "steps_used_max": max(steps)}

    def quality(self, kind: str | None = None) -> dict[str, float]:
        """PSNR mean / 5th percentile, SSIM mean, max L-inf and mean flat-quarter RMS (0-255) of the
        full-resolution outputs (of one ``kind``)."""
        rows = [self.photos[i] for i, name in enumerate(self.kinds) if kind is None or name == kind]
        psnrs = [row["psnr"] for row in rows]
        return {"psnr_mean": float(np.mean(psnrs)), "psnr_p05": float(np.percentile(psnrs, 5)),
                "ssim_mean": float(np.mean([row["ssim"] for row in rows])),
                "linf_max": float(max(row["linf"] for row in rows)),
                "flat_rms_mean": float(np.mean([row["flat_rms"] for row in rows]))}

    def quality_by_kind(self) -> dict[str, dict[str, float]]:
        """:meth:`quality` of each attack (and stand-in), with its cloaking seconds per photo."""
        counts = {kind: self.kinds.count(kind) for kind in dict.fromkeys(self.kinds)}
        return {kind: {**self.quality(kind), "cloak_seconds_per_photo": self.cloak_seconds.get(kind, 0.0) / count,
                       **self.steps(kind)} for kind, count in counts.items()}

    def quality_per_photo(self, names: Sequence[str] | None = None) -> list[dict]:
        """Each cloak's :func:`~comcloak.attacks.metrics.photo_quality`, with its ``attack`` (kind), ``photo`` (index)
        and, given the photos' ``names``, its ``name``: for comparing runs photo by photo."""
        return [{"attack": kind, "photo": index, **({"name": names[index]} if names is not None else {}), **row,
                 "steps_used": steps} for kind, index, row, steps in zip(self.kinds, self.indices, self.photos,
                                                                         self.steps_used)]


@dataclass
class ArchiveResult(FullResolutionQuality):
    targeted: bool = False
    n_photos: int = 0
    rows: list[ProtocolRow] = field(default_factory=list)
    clean_agreement: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CloakRun:
    """What the archive and platform protocols cloak, and how.

    Attributes:
        photos: uint8 (H, W, 3) photos at full resolution.
        attacks: the attack configurations; with ``throughs``, one cloak per (attack, stand-in).
        throughs: stand-in name -> module, or a :class:`CodecMatchedThroughs` (``comodel:auto``: cloaks per codec
            through the stand-in matched to it), or None (a preset cloaking through its own stand-in).
        codecs: the platform chains or profiles every cloak is scored after.
        make_cloaker: ``(config, stand-in module) -> Cloaker``; it owns the classifier, size and backend.
        device: where the judges classify.
        progress: called with the number of photos cloaked.
        batch_size: photos cloaked together (attack views of equal shape are attacked together).
    """

    photos: Sequence[np.ndarray]
    attacks: Sequence[AttackConfig]
    throughs: dict[str, nn.Module | CodecMatchedThroughs | None]
    codecs: Sequence[Codec]
    make_cloaker: Callable[[AttackConfig, nn.Module | None], object]
    device: torch.device | str = "cpu"
    progress: Callable[[int], None] | None = None
    batch_size: int = 8


def full_resolution_cloaks(run: CloakRun, quality: FullResolutionQuality,
                           ) -> Iterator[tuple[AttackConfig, str, list[Codec], int, CloakResult]]:
    """Cloak every photo for every (attack, stand-in) at full resolution, as the archive and platform protocols do.

    Yields ``(config, stand-in name, codecs to score this cloak on, photo index, cloak)``; ``comodel:auto`` cloaks
    once per distinct matched stand-in, scored on its codecs. Each cloak's quality goes into ``quality``. The config
    handed to ``run.make_cloaker`` names the stand-in run; a stand-in module of None hands the config as it is (a
    preset with its own stand-in).
    """
    photos, batch_size, progress = run.photos, run.batch_size, run.progress
    for config in run.attacks:
        for through_name, through in run.throughs.items():
            for stand_in, module, group in cloak_groups(through_name, through, run.codecs):
                # No module: the config is a preset that cloaks through its own stand-in.
                cloaker = run.make_cloaker(config if module is None else replace(config, through=stand_in), module)
                row_through = through_name if module is not None else config.through
                kind = f"{config.strength or config.method} through {row_through}"
                for start in range(0, len(photos), batch_size):
                    chunk = list(photos[start : start + batch_size])
                    began = time.perf_counter()
                    cloaks = cloaker.cloak_photos(chunk, batch_size)
                    quality.cloak_seconds[kind] = quality.cloak_seconds.get(kind, 0.0) + time.perf_counter() - began
                    for offset, (photo, cloak) in enumerate(zip(chunk, cloaks)):
                        quality.add(photo, cloak.cloaked, kind, start + offset, cloak.steps_used)
                        yield config, row_through, group, start + offset, cloak
                    if progress is not None:
                        progress(len(chunk))


def run_archive_protocol(classifier: nn.Module, run: CloakRun) -> ArchiveResult:
    """Score full-resolution cloaks after the platform chains ``run.codecs`` (see the module docstring).

    ``run.make_cloaker(config, through_module)`` returns a Cloaker for one attack and stand-in (the caller owns its
    classifier, size and backend). ``comodel:auto`` (a :class:`CodecMatchedThroughs`) cloaks for each chain through
    the stand-in matched to it.
    """
    photos, chains, device = run.photos, run.codecs, run.device
    if not photos:
        raise ValueError("the archive protocol needs at least one photo")
    targeted = common_targeted(run.attacks)
    result = ArchiveResult(targeted=targeted, n_photos=len(photos))

    def label_after(chain: Codec, photo: np.ndarray) -> int:
        return view_top_labels(classifier, chain.apply(photo), device=device, k=1)[0]

    clean = {chain.spec: [label_after(chain, photo) for photo in photos] for chain in chains}
    originals = [view_top_labels(classifier, photo, device=device, k=1)[0] for photo in photos]
    for chain in chains:
        result.clean_agreement[chain.spec] = sum(a == b for a, b in zip(clean[chain.spec], originals))
    hits: dict[tuple[str, str, str], int] = {}
    for config, through_name, group, index, cloak in full_resolution_cloaks(run, result):
        for chain in group:
            label = label_after(chain, cloak.cloaked)
            key = (config.method, through_name, chain.spec)
            succeeded = attack_succeeded(label, cloak.goal_label, clean[chain.spec][index], targeted)
            hits[key] = hits.get(key, 0) + int(succeeded)
    result.rows = [ProtocolRow(*key, count, len(photos)) for key, count in hits.items()]
    return result
