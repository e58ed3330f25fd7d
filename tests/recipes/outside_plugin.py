"""The package outside the repository (``outside_package/``) installed into a temporary folder, and the installed
``comcloak`` console script run with it: what a user gets after ``pip install comcloak comcloak-toy-plugin``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

OUTSIDE_PACKAGE = Path(__file__).parent / "outside_package"
BACKEND = "toy-plugin-float64"  # what outside_package/comcloak_toy_plugin/backend.py registers
CLASSIFIER = "toy_plugin_classifier"  # what outside_package/comcloak_toy_plugin/classifier.py registers
BROKEN_WARNING = "plugin 'broken' (comcloak.backends, from comcloak-toy-plugin) left out: RuntimeError"
MARKER = "COMCLOAK_TOY_PLUGIN_MARKER"  # the toy runner appends a line to this file each time it attacks
FAST = ["--steps", "2", "--attack-size", "48", "--device", "cpu", "--check", "none", "-q"]


def console_script() -> str:
    """The installed ``comcloak`` command, preferably the one beside this interpreter (the virtual environment's)."""
    found = shutil.which("comcloak", path=str(Path(sys.executable).parent)) or shutil.which("comcloak")
    if found is None:
        pytest.skip("the comcloak console script is not installed (pip install -e .)")
    return found


@dataclass(frozen=True)
class InstalledCli:
    """The installed ``comcloak`` command seeing the plugin package installed in ``site``."""

    site: Path
    photo: Path  # a small PNG to cloak

    def run(self, *args: str, marker: Path | None = None) -> subprocess.CompletedProcess:
        """Run ``comcloak ARGS`` with ``site`` first on PYTHONPATH (the rest still finds comcloak itself)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.site), env.get("PYTHONPATH")]))
        if marker is not None:
            env[MARKER] = str(marker)
        return subprocess.run([console_script(), *args], capture_output=True, text=True, env=env, timeout=300)


def install_outside_package(folder: Path, photo: np.ndarray) -> InstalledCli:
    """``pip install`` the outside package into ``folder/site`` offline (setuptools from this environment)."""
    source = folder / "outside_package"
    shutil.copytree(OUTSIDE_PACKAGE, source)  # the build writes build/ and *.egg-info beside the sources it is given
    site = folder / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "--target", str(site), str(source)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    Image.fromarray(photo).save(folder / "cat.png")
    return InstalledCli(site, folder / "cat.png")


def warning_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that report the broken plugin."""
    return [line for line in stderr.splitlines() if BROKEN_WARNING in line]
