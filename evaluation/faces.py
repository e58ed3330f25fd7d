"""The faces protocol (``comcloak eval --protocol faces PHOTOS/``, issue 25): face cloaks as an attacker sees them.

PHOTOS is a folder of people, ``PERSON/photo.jpg``, at least two photos each. Every photo (longer side reduced to
``side``) is cloaked with a face preset (:func:`comcloak.attacks.faces.cloak_faces`); each cloak goes through every
platform profile (:data:`comcloak.codecs.platforms.PROFILES`); then every judge (:mod:`.face_judge`: dlib,
evaluation only, and the SFace surrogate) finds the faces with its own detector and alignment and compares:

- **pairs** (the gallery-search threat): for every pair of different photos of one person that the judge matches
  when both are clean, whether it still matches the received cloak of one with the other, clean photo;
- **self** (the hardest case): whether it still matches the received cloak with its own clean original.

A photo's face is the largest face the judge finds on the clean photo; on the received cloak, the face whose box
overlaps it (IoU >= 0.3, boxes scaled back to the photo's size). When the judge finds no such face, the cloak is a
**miss**, counted apart and never as broken; a photo in which the judge finds no face when clean is a **clean
miss**, not judged. Rates are broken / judged. Quality (PSNR, SSIM) is measured on the whole photo and on the
face regions the cloak changed, against the resized original.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from comcloak.attacks.faces import FaceCloakConfig, FaceCloakResult, FaceModels, cloak_faces
from comcloak.attacks.faces.cloak import SAME_FACE_IOU
from comcloak.attacks.metrics import PSNR_CAP, psnr, ssim
from comcloak.codecs.photos import PHOTO_EXTENSIONS, PhotoError, load_photo
from comcloak.codecs.platforms import Platform
from comcloak.errors import UserError
from comcloak.evaluation.face_cache import CloakCache, record_to_dict
from comcloak.evaluation.face_judge import DlibJudge, FaceJudge, JudgedFace, SFaceJudge

FACE_JUDGES: dict[str, Callable[[], FaceJudge]] = {"dlib": DlibJudge, "sface": SFaceJudge}
MIN_PHOTOS_PER_PERSON = 2  # a pair needs two different photos of one person


@dataclass(frozen=True)
class PeoplePhotos:
    """The photos of a folder of people: ``photos`` maps ``PERSON/file`` to uint8 (H, W, 3) RGB; ``failed``: the
    one-line reasons of files that could not be read."""

    photos: dict[str, np.ndarray]
    failed: tuple[str, ...] = ()
    side: int | None = None  # the longer side the photos were reduced to

    def people(self) -> dict[str, list[str]]:
        """Person -> the names of their photos, in order."""
        people: dict[str, list[str]] = {}
        for name in self.photos:
            people.setdefault(person_of(name), []).append(name)
        return people


def person_of(name: str) -> str:
    """``PERSON/file`` -> ``PERSON``."""
    return name.split("/", 1)[0]


def reduce_photo(pixels: np.ndarray, side: int) -> np.ndarray:
    """The photo with its longer side at most ``side`` (bilinear, as the face measurements in docs/faces.md)."""
    image = Image.fromarray(pixels)
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(image).copy()


def read_people(folder: str | Path, side: int) -> PeoplePhotos:
    """Read ``folder/PERSON/photo`` (photos directly inside each person's folder), each reduced to ``side``.

    Raises :class:`~comcloak.errors.UserError` (one line) when ``folder`` has no PERSON/ subfolders or a person has
    fewer than two readable photos. Example::

        people = read_people("../shared/data/faces/identities", side=640)
        people.people()   # {"obama": ["obama/test-obama1.jpg", ...], ...}
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"the faces protocol reads a folder of PERSON/ subfolders; {folder} is not a folder")
    persons = sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not persons:
        raise UserError(f"{folder} has no PERSON/ subfolders (the faces protocol reads PERSON/photo.jpg)")
    photos, failed = {}, []
    for person in persons:
        for path in sorted(person.iterdir()):
            if path.suffix.lower() not in PHOTO_EXTENSIONS or not path.is_file():
                continue
            try:
                photos[f"{person.name}/{path.name}"] = reduce_photo(load_photo(path).pixels, side)
            except PhotoError as error:
                failed.append(str(error))
    result = PeoplePhotos(photos, tuple(failed), side)
    counts = {person.name: len(result.people().get(person.name, [])) for person in persons}
    short = [f"{name} ({count})" for name, count in counts.items() if count < MIN_PHOTOS_PER_PERSON]
    if short:
        raise UserError(f"every person needs at least {MIN_PHOTOS_PER_PERSON} readable photos in {folder}; "
                        f"too few: {', '.join(short)}")
    return result


@dataclass
class FaceTally:
    """One judge's counts after one profile (see the module docstring)."""

    clean_misses: int = 0  # photos in which the judge finds no face when clean: not judged
    self_judged: int = 0  # cloaks whose face the judge found after the profile
    self_broken: int = 0  # ... and no longer matches with its own clean original
    misses: int = 0  # cloaks in which the judge no longer finds the face (never counted as broken)
    pairs_clean: int = 0  # (cloaked photo, other photo of the person) pairs the judge matches when both are clean
    pairs_judged: int = 0  # ... whose cloak's face the judge found after the profile
    pairs_broken: int = 0  # ... and no longer matches with the other, clean photo
    pairs_missed: int = 0  # ... whose cloak's face the judge no longer finds

    def as_dict(self) -> dict:
        """The counts and the rates broken / judged (None when nothing was judged)."""
        return {**asdict(self), "self_broken_rate": self.self_broken / self.self_judged if self.self_judged else None,
                "pairs_broken_rate": self.pairs_broken / self.pairs_judged if self.pairs_judged else None}


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    width = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-12)


def match_face(clean: JudgedFace, found: Sequence[JudgedFace], scale: tuple[float, float]) -> JudgedFace | None:
    """The face of ``found`` (boxes in the received photo's pixels) that is ``clean``'s face: the best overlap of at
    least ``SAME_FACE_IOU`` once its box is scaled by ``scale`` = (x, y) original size / received size; else None."""
    sx, sy = scale
    best, best_iou = None, SAME_FACE_IOU
    for face in found:
        x, y, w, h = face.box
        overlap = box_iou(clean.box, (x * sx, y * sy, w * sx, h * sy))
        if overlap >= best_iou:
            best, best_iou = face, overlap
    return best


def tally_judge(judge: FaceJudge, clean: dict[str, JudgedFace | None], seen: dict[str, JudgedFace | None]) -> FaceTally:
    """Count pairs and self-matches broken for one judge and profile.

    Args:
        judge: decides ``same_person`` on descriptors.
        clean: ``PERSON/file`` -> the judge's face on the clean photo (None: it found none).
        seen: ``PERSON/file`` -> the matching face on the received cloak (None or absent: a miss).
    """
    tally = FaceTally()
    for name, face in clean.items():
        if face is None:
            tally.clean_misses += 1
            continue
        others = [other for other, other_face in clean.items()
                  if other != name and person_of(other) == person_of(name) and other_face is not None
                  and judge.same_person(face.descriptor, other_face.descriptor)]
        tally.pairs_clean += len(others)
        cloak = seen.get(name)
        if cloak is None:
            tally.misses += 1
            tally.pairs_missed += len(others)
            continue
        tally.self_judged += 1
        tally.self_broken += not judge.same_person(cloak.descriptor, face.descriptor)
        tally.pairs_judged += len(others)
        tally.pairs_broken += sum(not judge.same_person(cloak.descriptor, clean[other].descriptor) for other in others)
    return tally


def face_quality(clean: np.ndarray, cloak: np.ndarray, result: FaceCloakResult) -> dict:
    """Whole-photo PSNR/SSIM and face-region PSNR (over the union of the cloaked squares) and SSIM (the squares'
    mean, weighted by area); the region values are None when no face was cloaked."""
    regions = [face.region for face in result.faces if face.region is not None]
    quality = {"psnr": min(psnr(clean, cloak), PSNR_CAP), "ssim": ssim(clean, cloak),
               "region_psnr": None, "region_ssim": None}
    if regions:
        mask = np.zeros(clean.shape[:2], bool)
        for region in regions:
            mask[region.slices()] = True
        areas = [region.side**2 for region in regions]
        region_ssims = [ssim(clean[region.slices()], cloak[region.slices()]) for region in regions]
        quality["region_psnr"] = min(psnr(clean[mask], cloak[mask]), PSNR_CAP)
        quality["region_ssim"] = float(np.average(region_ssims, weights=areas))
    return quality


@dataclass
class FaceEvalResult:
    """What the faces protocol measured: per photo (``photos``: status, faces, quality, seconds) and per (profile,
    judge) (``rows``), the photos that failed to read, the judges' roles and the wall time."""

    config: FaceCloakConfig
    photos: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    judges: dict[str, str] = field(default_factory=dict)
    failed: tuple[str, ...] = ()
    side: int | None = None
    seconds: float = 0.0

    def payload(self) -> dict:
        """Everything as JSON-ready values: settings, per-(profile, judge) rows, per-photo records, summary."""
        attack, face = self.config.attack, self.config.face
        settings = {"preset": attack.strength, "eps": attack.eps_255, "steps": attack.steps,
                    "draws": attack.eot.draws, "through": attack.through, "seed": attack.seed, **asdict(face)}
        return {"protocol": "faces", "settings": settings, "judges": self.judges,
                "profiles": list(dict.fromkeys(row["profile"] for row in self.rows)), "results": self.rows,
                "summary": self.summary(), "photos": self.photos, "failed_photos": list(self.failed),
                "side": self.side, "seconds": self.seconds}

    def summary(self) -> dict:
        """Means over the photos in which at least one face was cloaked, the face counts and seconds per face."""
        cloaked = [photo for photo in self.photos if photo["region_psnr"] is not None]
        faces = [face for photo in self.photos for face in photo["faces"]]
        attacked = [face for face in faces if face["region"] is not None]

        def stat(key: str, how: Callable) -> float | None:
            return float(how([photo[key] for photo in cloaked])) if cloaked else None

        seconds = [face["seconds"] for face in attacked]
        return {"photos": len(self.photos), "photos_cloaked": len(cloaked),
                "photos_without_faces": sum(photo["status"] == "no faces" for photo in self.photos),
                "faces": len(faces), "faces_cloaked": len(attacked),
                "faces_protected_at_cloak_time": sum(face["protected"] for face in attacked),
                "psnr_mean": stat("psnr", np.mean), "psnr_min": stat("psnr", np.min),
                "ssim_mean": stat("ssim", np.mean), "ssim_min": stat("ssim", np.min),
                "region_psnr_mean": stat("region_psnr", np.mean), "region_psnr_min": stat("region_psnr", np.min),
                "region_ssim_mean": stat("region_ssim", np.mean), "region_ssim_min": stat("region_ssim", np.min),
                "seconds_per_face": float(np.mean(seconds)) if seconds else None,
                "seconds_per_face_max": float(np.max(seconds)) if seconds else None,
                "photos_from_cache": sum(photo["cached"] for photo in self.photos)}


def cloak_people(people: PeoplePhotos, config: FaceCloakConfig, models: FaceModels | None = None,
                 cache: CloakCache | None = None, progress: Callable[[int], None] | None = None,
                 backend: str = "torch") -> dict:
    """``PERSON/file`` -> (:class:`FaceCloakResult`, whether it came from ``cache``) for every photo, cloaked by the
    face loop of ``backend`` (``attacks/faces/cloak.FACE_BACKENDS``)."""
    cloaks = {}
    for name, photo in people.photos.items():
        result = cache.load(photo, config, backend) if cache else None
        cloaks[name] = (result, True)
        if result is None:
            # The models load on the first photo the cache does not hold: a fully cached run never loads them.
            models = models or FaceModels.create(config.face.detector, config.face.recogniser)
            cloaks[name] = (cloak_faces(photo, config, models=models, backend=backend), False)
            if cache:
                cache.store(photo, config, cloaks[name][0], backend)
        if progress:
            progress(1)
    return cloaks


def run_face_protocol(people: PeoplePhotos, config: FaceCloakConfig, judges: Sequence[FaceJudge],
                      profiles: Sequence[str], *, models: FaceModels | None = None, cache: CloakCache | None = None,
                      progress: Callable[[int], None] | None = None, backend: str = "torch") -> FaceEvalResult:
    """Cloak every photo of ``people`` with ``config``, send each cloak through each profile of ``profiles``
    (names of :data:`~comcloak.codecs.platforms.PROFILES`) and count, per judge, pairs and self-matches broken.

    ``models``: the cloak's surrogate models (default: ``config.face``'s); ``cache``: stored cloaks, reused and
    added to; ``progress(n)``: called after each cloak and each profile; ``backend``: the face loop's. Example::

        people = read_people("identities", 640)
        result = run_face_protocol(people, face_config("faces"), [DlibJudge(), SFaceJudge()], ["facebook"])
        result.rows[0]["pairs_broken_rate"]
    """
    started = time.perf_counter()
    cloaks = cloak_people(people, config, models, cache, progress, backend)
    result = FaceEvalResult(config, judges={judge.name: judge.role for judge in judges}, failed=people.failed,
                            side=people.side)
    for name, (cloak, cached) in cloaks.items():
        result.photos.append({"name": name, "status": cloak.status, "cached": cached,
                              "faces": [record_to_dict(face) for face in cloak.faces],
                              **face_quality(people.photos[name], cloak.photo, cloak)})
    clean = {judge.name: {name: next(iter(judge.faces(photo)), None) for name, photo in people.photos.items()}
             for judge in judges}
    for profile in profiles:
        platform = Platform(profile)
        received = {name: platform.apply(cloak.photo) for name, (cloak, _) in cloaks.items()}
        for judge in judges:
            seen = {}
            for name, face in clean[judge.name].items():
                if face is not None:
                    height, width = people.photos[name].shape[:2]
                    scale = (width / received[name].shape[1], height / received[name].shape[0])
                    seen[name] = match_face(face, judge.faces(received[name]), scale)
            tally = tally_judge(judge, clean[judge.name], seen)
            result.rows.append({"profile": profile, "judge": judge.name, "role": judge.role, **tally.as_dict()})
        if progress:
            progress(1)
    result.seconds = time.perf_counter() - started
    return result
