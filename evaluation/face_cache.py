"""A cache of face cloaks for ``comcloak eval --protocol faces --cache DIR``: re-judging never re-cloaks.

A cloak is stored as a PNG (lossless: the 8-bit cloak exactly) beside a JSON file with its face records, under a
key that hashes the photo's pixels (after the protocol's resize), the preset's name and every setting of the face
cloak (:class:`~comcloak.attacks.faces.FaceCloakConfig`'s repr, which names each field and value) and a fingerprint
of the code that makes a cloak (:func:`code_fingerprint`), so a cloak stored by other code is never reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from comcloak.atomic import atomic_writer, write_json
from comcloak.attacks.faces import FaceCloakConfig, FaceCloakResult, FaceRecord
from comcloak.attacks.faces.compose import Region

CACHE_FORMAT = 1  # bump when what is stored changes: older entries are then simply not found
# The package's folders whose code decides a face cloak's pixels: the loop, stand-ins and face cloak, the models and
# their weights' loading, the codecs, the exported step and the runners that run it, the kernels.
CLOAK_CODE = ("attacks", "models", "codecs", "export", "kernels", "engine/backends")


@functools.cache
def code_fingerprint() -> str:
    """The SHA-256 of the Python sources under :data:`CLOAK_CODE` (their paths and bytes): any edit changes it."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in CLOAK_CODE:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cloak_key(photo: np.ndarray, config: FaceCloakConfig, backend: str = "torch") -> str:
    """The hex SHA-256 of ``photo`` (uint8 (H, W, 3)), ``config``, the face loop's ``backend`` (the torch loop's
    keys name none) and the cloak's code (:func:`code_fingerprint`).

    Example:
        >>> cloak_key(np.zeros((4, 4, 3), np.uint8), face_config("faces"))[:8]  # doctest: +SKIP
        '3f0c2a1b'
    """
    digest = hashlib.sha256(f"comcloak-face-cloak:{CACHE_FORMAT}:{code_fingerprint()}:{photo.shape}:".encode())
    digest.update(np.ascontiguousarray(photo, np.uint8).tobytes())
    digest.update(repr(config).encode())
    if backend != "torch":  # the backends' cloaks differ by float32 rounding drift: each keeps its own
        digest.update(f":backend={backend}".encode())
    return digest.hexdigest()


def record_to_dict(record: FaceRecord) -> dict:
    region = record.region
    return {"box": [float(v) for v in record.box], "score": record.score,
            "region": None if region is None else [region.top, region.left, region.side],
            "steps": record.steps, "cosine": record.cosine, "protected": record.protected, "seconds": record.seconds}


def record_from_dict(entry: dict) -> FaceRecord:
    region = None if entry["region"] is None else Region(*entry["region"])
    return FaceRecord(tuple(entry["box"]), entry["score"], region, entry["steps"], entry["cosine"],
                      entry["protected"], entry["seconds"])


class CloakCache:
    """Face cloaks stored under ``root`` by :func:`cloak_key`; ``root/<preset>/<key>.png`` and ``.json``.

    Example:
        >>> cache = CloakCache(Path("/tmp/face-cloaks"))
        >>> cached = cache.load(photo, config)          # None the first time
        >>> cache.store(photo, config, cloak_faces(photo, config))
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _paths(self, photo: np.ndarray, config: FaceCloakConfig, backend: str) -> tuple[Path, Path]:
        stem = self.root / (config.attack.strength or "custom") / cloak_key(photo, config, backend)
        return stem.with_suffix(".png"), stem.with_suffix(".json")

    def load(self, photo: np.ndarray, config: FaceCloakConfig, backend: str = "torch") -> FaceCloakResult | None:
        """The stored cloak of ``photo`` under ``config``, or None (not stored, or stored for another shape)."""
        image_path, record_path = self._paths(photo, config, backend)
        if not (image_path.is_file() and record_path.is_file()):
            return None
        with Image.open(image_path) as image:
            cloak = np.asarray(image.convert("RGB")).copy()
        if cloak.shape != photo.shape:
            return None
        entries = json.loads(record_path.read_text())["faces"]
        return FaceCloakResult(cloak, tuple(record_from_dict(entry) for entry in entries))

    def store(self, photo: np.ndarray, config: FaceCloakConfig, result: FaceCloakResult,
              backend: str = "torch") -> None:
        """Keep ``result`` (the cloak of ``photo`` under ``config``), atomically."""
        image_path, record_path = self._paths(photo, config, backend)
        with atomic_writer(image_path) as handle:
            Image.fromarray(result.photo).save(handle, format="PNG")
        write_json({"format": CACHE_FORMAT, "faces": [record_to_dict(record) for record in result.faces]},
                   record_path)
