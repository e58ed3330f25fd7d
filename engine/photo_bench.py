"""``comcloak bench --photos`` for the classifier cloak: the runners timed on real photos' working views.

The parent (:func:`photo_work`) loads the photos, reduces each to the working view and sets its goals exactly as
``comcloak cloak`` does (a :class:`~comcloak.engine.cloaker.Cloaker` of the variant's configuration:
:meth:`~comcloak.engine.cloaker.Cloaker.attack_view` and :meth:`~comcloak.engine.cloaker.Cloaker.attack_goals`),
and exports one step graph per working-view size for the exported backends. The worker
(:func:`prepare_photos`, in its own process: :mod:`comcloak.engine.throughput`) attacks the photos one at a time —
their working views differ in size (shorter side = the attack size, aspect kept), and one at a time is also how a
photo's stopping shows in its own time — and records the steps each used (the runner's ``infer_result``): with
per-photo stopping (``--stop-after``) a photo that is safely protected early costs fewer steps.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comcloak.engine.bench_results import BenchSettings


@dataclass
class PhotoWork:
    """What a worker attacks: per photo its working view (1, 3, h, w) float32 in [0, 1] and goals (1, M) int64 (M
    surrogates), as numpy arrays (they cross to the spawned worker by pickle); ``graphs``: the exported step graph
    of each working-view size ``(h, w)`` (exported backends)."""

    views: list[Any] = field(default_factory=list)
    goals: list[Any] = field(default_factory=list)
    graphs: dict[tuple[int, int], str] = field(default_factory=dict)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return sorted({tuple(view.shape[-2:]) for view in self.views})


def photo_work(settings: BenchSettings, cache_dir: str | os.PathLike | None, export: bool) -> PhotoWork:
    """The working views and goals of ``settings.photos`` under ``settings.config`` (as ``comcloak cloak`` makes
    them), and with ``export`` each view size's step graph (cached like the Cloaker's).

    Example:
        >>> work = photo_work(BenchSettings(strength="balanced", photos=("samples/rocket.jpg",)), None, True)
        >>> work.views[0].shape, work.goals[0].shape          # (1, 3, 224, h), (1, 2)
    """
    from comcloak.codecs.photos import load_rgb
    from comcloak.codecs.tensors import to_tensor
    from comcloak.engine.cloaker import Cloaker
    from comcloak.engine.throughput import export_for_bench

    cloaker = Cloaker(settings.config, backend="torch", device=settings.device, protect="objects")
    work = PhotoWork()
    for path in settings.photos:
        photo = load_rgb(path)
        view = cloaker.attack_view(to_tensor(photo[None], cloaker.device))
        work.views.append(view.cpu().numpy())
        work.goals.append(cloaker.attack_goals(cloaker.label_view(photo))[1].cpu().numpy())
    if export:
        work.graphs = {shape: str(export_for_bench(settings, cache_dir, *shape)) for shape in work.shapes}
    return work


def prepare_photos(backend: str, work: PhotoWork, settings: BenchSettings,
                   make_runner: Callable[[int, int], Any]) -> tuple[list[Any], Callable[[], tuple[int, float, float]]]:
    """In the worker: one activated runner per working-view size (exported graphs are fixed-size; the torch
    runners take any, so one serves all), warmed on every photo. Returns the runners and a function that attacks
    every photo once per pass, for ``settings.min_seconds`` (at least one pass) -> ``(photos attacked, seconds, mean
    steps used)``. ``make_runner(height, width)``: an activated runner for that view size."""
    import torch

    from comcloak.engine.backends import get_backend

    exported = get_backend(backend).exported
    runners: dict[tuple[int, int], Any] = {}
    items = []
    for view, goal in zip(work.views, work.goals):
        shape = tuple(view.shape[-2:]) if exported else (0, 0)
        if shape not in runners:
            runners[shape] = make_runner(view.shape[-2], view.shape[-1])
        items.append((torch.from_numpy(view).to(settings.device), torch.from_numpy(goal).to(settings.device),
                      runners[shape]))

    def attack_all() -> list[int]:
        steps = [int(runner.infer_result(view, goal).steps_used.sum()) for view, goal, runner in items]
        if settings.device.startswith("cuda"):
            torch.cuda.synchronize()
        return steps

    attack_all()  # warm-up: sessions, lazy allocation, every size once

    def timed() -> tuple[int, float, float]:
        steps: list[int] = []
        began = time.perf_counter()
        while True:
            steps += attack_all()
            elapsed = time.perf_counter() - began
            if elapsed >= settings.min_seconds:
                return len(steps), elapsed, statistics.fmean(steps)

    return list(runners.values()), timed
