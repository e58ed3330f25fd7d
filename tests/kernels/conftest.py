"""Builds the kernel library once per session (CMake + nvcc) when a CUDA toolkit is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kernel_library(tmp_path_factory) -> Path:
    """Path of a freshly built ``libcomcloak_kernels.so`` (default architectures); skips without nvcc or cmake."""
    if shutil.which("cmake") is None or shutil.which("nvcc") is None:
        pytest.skip("no CUDA toolkit (nvcc) or cmake: the kernels are not compiled")
    build = tmp_path_factory.mktemp("kernels-build")
    for command in (["cmake", "-S", str(ROOT), "-B", str(build)], ["cmake", "--build", str(build), "-j", "2"]):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    library = build / "libcomcloak_kernels.so"
    assert library.is_file(), f"the build made no {library.name}:\n{result.stdout[-2000:]}"
    return library


@pytest.fixture
def loaded_kernels(kernel_library, monkeypatch):
    """comcloak.kernels with the freshly built library loaded (the lookup cache is reset around the test)."""
    import comcloak.kernels as kernels

    monkeypatch.setenv(kernels.LIBRARY_ENV, str(kernel_library))
    kernels.load_library.cache_clear()
    yield kernels
    kernels.load_library.cache_clear()
