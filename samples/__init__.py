"""The bundled sample photos: the demo's inputs and the tests' fixtures (licences in ``samples/LICENSE.md``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_folder() -> Path:
    """The folder that holds the bundled photos (inside the installed package)."""
    return Path(str(resources.files(__name__)))


def sample_photos() -> list[Path]:
    """The bundled CC0 / public-domain sample photos, sorted by name."""
    return sorted(path for path in sample_folder().iterdir() if path.suffix == ".jpg")
