"""Packaging: every Python package folder in the repository is mapped and listed in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {folder: name for name, folder in config["package-dir"].items()}
    on_disk = {
        str(init.parent.relative_to(ROOT)).replace("\\", "/")
        for init in ROOT.rglob("__init__.py")
        if not {"tests", ".venv", "venv", "build"} & set(init.relative_to(ROOT).parts)
    }
    assert on_disk == set(mapped), f"unmapped package folders: {sorted(on_disk - set(mapped))}"
    assert set(config["packages"]) == set(mapped.values())
