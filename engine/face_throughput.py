"""``comcloak bench --workload faces``: seconds per face of the face cloak's loop, per backend, in the same run.

Each backend (``torch``: the one loop, ``run_attack``; ``onnxruntime``: the exported face step,
``comcloak.engine.backends.face_runner``) runs in its own ``spawn``ed process (its peak RSS is its own), prepared
once (models, the faces of the photos, one warm-up face: ONNX Runtime's session), then times the whole loop on every
face (``attacks/faces/cloak.attack_face``: the working view, the clean embedding, the preset's steps x draws; no
detection and no check), once per round, the backends taking turns so that the machine's drift hits both alike.
The parent exports the face step once (the workers find it in the cache) and, from the perturbations the workers
send back, composes each backend's cloak of every photo and compares them with torch's: the fraction of 8-bit
pixel values that differ and the largest difference (float32 rounding between the two gradient paths).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from comcloak.attacks.faces.cloak import FACE_BACKENDS as FACE_LOOPS
from comcloak.engine.bench_results import library_versions, machine_description
from comcloak.engine.throughput import SpawnedWorker

FACE_BACKENDS = tuple(FACE_LOOPS)  # the face cloak's loops: torch (the reference) and onnxruntime
REFERENCE = "torch"


@dataclass(frozen=True)
class FaceBenchSettings:
    """What one face bench run measures (JSON ``settings``)."""

    photos: tuple[str, ...]
    preset: str = "faces"
    faces: int = 4  # the most faces timed (the first found, photo by photo)
    max_side: int = 640  # photos are reduced to this longer side first (as docs/faces.md's measurements)
    steps: int | None = None  # None: the preset's
    threads: int | None = None
    cache_dir: str | None = None

    def config(self):  # -> FaceCloakConfig
        from comcloak.attacks.faces import face_config

        return face_config(self.preset, steps=self.steps)


@dataclass
class FaceWork:
    """The faces a worker attacks: per face, the photo's index, the detection and its region."""

    photos: list[Any] = field(default_factory=list)
    faces: list[tuple[int, Any, Any]] = field(default_factory=list)


def load_faces(settings: FaceBenchSettings, detector: Any) -> FaceWork:
    """The photos (uint8, longer side at most ``max_side``) and their first ``faces`` faces above ``min_face``."""
    import numpy as np
    from PIL import Image

    from comcloak.attacks.faces.compose import face_region
    from comcloak.models.faces import detect_faces

    work = FaceWork()
    face_settings = settings.config().face
    for path in settings.photos:
        image = Image.open(path).convert("RGB")
        image.thumbnail((settings.max_side, settings.max_side), Image.Resampling.BILINEAR)
        photo = np.asarray(image).copy()
        work.photos.append(photo)
        for face in detect_faces(detector, photo):
            if min(face.box[2], face.box[3]) >= face_settings.min_face and len(work.faces) < settings.faces:
                region = face_region(face.box, *photo.shape[:2], face_settings.padding)
                work.faces.append((len(work.photos) - 1, face, region))
    return work


def _worker(connection: Any, backend: str, settings: FaceBenchSettings) -> None:
    """Prepare once; answer ``"time"`` with (seconds per face, perturbations) and ``"stop"`` with the peak RSS."""
    try:
        import torch

        from comcloak.attacks.faces.cloak import FaceModels, attack_face, face_loop
        from comcloak.codecs.tensors import to_tensor
        from comcloak.engine.throughput import peak_rss_megabytes

        if settings.threads:
            torch.set_num_threads(settings.threads)
        config = settings.config()
        models = FaceModels.create(config.face.detector, config.face.recogniser)
        work = load_faces(settings, models.detector)
        if not work.faces:
            raise ValueError("no face found in the photos")
        if backend == "torch":
            loop = face_loop("torch", models, config)
        else:
            from comcloak.engine.backends.face_runner import FaceOnnxRuntimeLoop

            loop = FaceOnnxRuntimeLoop(models.recogniser, config, settings.cache_dir, settings.threads)
        images = [to_tensor(photo[None]) for photo in work.photos]

        def attack(index: int) -> Any:
            photo_index, face, region = work.faces[index]
            return attack_face(models, images[photo_index], face, region, config, loop)

        attack(0)  # warm-up: the session, lazy allocations
    except Exception as exc:  # one line to the parent; the bench goes on without this backend
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", len(work.faces)))
    while connection.recv() == "time":
        seconds, deltas = [], []
        for index in range(len(work.faces)):
            began = time.perf_counter()
            delta, factors = attack(index)  # the working view's perturbation and its per-pixel budget
            deltas.append((delta.numpy(), None if factors is None else factors.numpy()))
            seconds.append(time.perf_counter() - began)
        connection.send(("ok", (seconds, deltas)))
    connection.send(("ok", peak_rss_megabytes()))


class FaceBenchWorker(SpawnedWorker):
    """One backend in its own process, prepared once, timed on demand (``time()``), closed with ``close()`` (its
    peak resident memory, MB)."""

    def __init__(self, backend: str, settings: FaceBenchSettings) -> None:
        self.backend = backend
        super().__init__(_worker, (backend, settings), backend)
        self.faces = self._ask(None)

    def time(self) -> tuple[list[float], list[Any]]:
        return self._ask("time")


def export_face_graph(settings: FaceBenchSettings) -> Path:
    """The face step graph the onnxruntime worker runs (exported once into the cache, self-checked)."""
    from comcloak.attacks.faces.cloak import FaceModels
    from comcloak.attacks.through import make_through
    from comcloak.engine.backends.face_runner import FaceStepGraphCache
    from comcloak.export.step_io import StepSpec

    config = settings.config()
    models = FaceModels.create(config.face.detector, config.face.recogniser)
    graphs = FaceStepGraphCache(models.recogniser, make_through(config.attack.through, config.attack.seed),
                                StepSpec.from_config(config.attack), settings.cache_dir)
    return graphs.path_for(config.face.work_size)


def pixel_parity(settings: FaceBenchSettings, deltas: dict[str, list[Any]]) -> dict[str, dict[str, float]]:
    """Each backend's composed cloaks against torch's: the fraction of 8-bit values that differ and the largest
    difference, over every photo with a timed face."""
    import numpy as np
    import torch

    from comcloak.attacks.faces.compose import Composer
    from comcloak.codecs.tensors import to_tensor
    from comcloak.models.faces import create_face_model

    config = settings.config()
    work = load_faces(settings, create_face_model(config.face.detector).eval())

    def cloaks(backend: str) -> list[Any]:
        composers = [Composer(to_tensor(photo[None]), config.face) for photo in work.photos]
        for (photo_index, _, region), (delta, factors) in zip(work.faces, deltas[backend]):
            composers[photo_index].add(region, torch.from_numpy(delta),
                                       None if factors is None else torch.from_numpy(factors))
        used = sorted({photo_index for photo_index, _, _ in work.faces})
        return [composers[i].compose(work.photos[i], config.attack.eps).astype(np.int16) for i in used]

    reference = cloaks(REFERENCE)
    found = {}
    for backend in deltas:
        if backend != REFERENCE:
            differences = np.concatenate([np.abs(a - b).ravel() for a, b in zip(cloaks(backend), reference)])
            found[backend] = {"fraction_differing": float(np.mean(differences > 0)),
                              "max_difference": int(differences.max())}
    return found


def measure_faces(settings: FaceBenchSettings, backends: tuple[str, ...], rounds: int = 1,
                  report: Any = print) -> dict:
    """Every backend on every face, ``rounds`` times interleaved; returns the JSON document (see :func:`face_table`)."""
    workers = []
    for backend in backends:
        try:
            workers.append(FaceBenchWorker(backend, settings))
        except RuntimeError as error:
            report(f"skipped: {error}")
    timings: dict[str, list[list[float]]] = {worker.backend: [] for worker in workers}
    deltas: dict[str, list[Any]] = {}
    try:
        for round_index in range(rounds):
            for worker in workers:
                seconds, found = worker.time()
                timings[worker.backend].append(seconds)
                deltas.setdefault(worker.backend, found)
                report(f"{worker.backend:12s} round {round_index + 1}/{rounds}: {statistics.mean(seconds):.2f} s per "
                       f"face over {len(seconds)} faces")
    finally:
        memory = {worker.backend: worker.close() for worker in workers}
    return face_payload(settings, timings, memory, pixel_parity(settings, deltas) if REFERENCE in deltas else {})


def face_payload(settings: FaceBenchSettings, timings: dict[str, list[list[float]]], memory: dict[str, float],
                 parity: dict[str, dict[str, float]]) -> dict:
    """The JSON document: machine, versions, settings, workload and one row per backend (seconds per face: the mean
    over faces, median over rounds; faces/s; the ratio to torch paired within each round; peak RSS)."""
    config = settings.config()
    rows = []
    for backend, rounds in timings.items():
        per_round = [statistics.mean(seconds) for seconds in rounds]
        row = {"backend": backend, "batch": config.attack.eot.draws, "faces": len(rounds[0]),
               "seconds_per_face": round(statistics.median(per_round), 3),
               "faces_per_s": round(1 / statistics.median(per_round), 4),
               "seconds_per_face_rounds": [round(value, 3) for value in per_round],
               "peak_rss_mb": round(memory[backend], 1)}
        if REFERENCE in timings:
            paired = [reference / mine for reference, mine in
                      zip((statistics.mean(seconds) for seconds in timings[REFERENCE]), per_round)]
            row["vs_torch"] = round(statistics.median(paired), 3)
            row["vs_torch_rounds"] = [round(value, 3) for value in paired]
        row.update(parity.get(backend, {}))
        rows.append(row)
    attack = config.attack
    return {"machine": machine_description(), "versions": library_versions(), "settings": asdict(settings),
            "workload": f"face cloak, preset {settings.preset}: {config.face.recogniser} through {attack.through}, "
                        f"{attack.method}, {attack.steps} steps x {attack.eot.draws} draws ({attack.eot.coded_draws} "
                        f"through the stand-in), {attack.loss} loss, {config.face.work_size}x{config.face.work_size} "
                        "working view per face",
            "rounds": len(next(iter(timings.values()), [])), "results": rows}


def face_table(payload: dict) -> str:
    """Markdown: machine, versions, workload, then one row per backend."""
    settings = payload["settings"]
    versions = ", ".join(f"{name} {value}" for name, value in payload["versions"].items())
    lines = [f"Machine: {payload['machine']}  ", f"Versions: {versions}  ",
             f"Workload: {payload['workload']}; threads {settings.get('threads') or 'default'}; "
             f"{payload['rounds']} round(s), interleaved  ", "",
             "| backend | batch (draws) | faces | s per face | faces/s | vs torch | peak RSS (MB) | pixels differing "
             "from torch | max difference |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in payload["results"]:
        ratio = f"{row['vs_torch']:.2f}x" if "vs_torch" in row else "–"
        rounds = row.get("vs_torch_rounds", [])
        if len(rounds) > 1:
            ratio += f" ({min(rounds):.2f}–{max(rounds):.2f})"
        differing = f"{100 * row['fraction_differing']:.3f}%" if "fraction_differing" in row else "–"
        lines.append(f"| {row['backend']} | {row['batch']} | {row['faces']} | {row['seconds_per_face']:.2f} | "
                     f"{row['faces_per_s']:.3f} | {ratio} | {row['peak_rss_mb']:.0f} | {differing} | "
                     f"{row.get('max_difference', '–')} |")
    return "\n".join(lines) + "\n"
