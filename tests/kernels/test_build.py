"""The CUDA kernels compile with the root CMakeLists.txt (compile-only here: it needs nvcc, not a GPU)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_cmake_builds_both_kernels_for_hopper_and_exports_their_c_abi(kernel_library) -> None:
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(kernel_library)], capture_output=True, text=True,
                             check=True).stdout
    exported = {line.split()[-1] for line in symbols.splitlines() if line.split()[-1].startswith("comcloak_")}
    assert exported == {"comcloak_attack_update", "comcloak_compose"}
    if shutil.which("cuobjdump"):
        listing = subprocess.run(["cuobjdump", "--list-elf", str(kernel_library)], capture_output=True, text=True,
                                 check=True).stdout
        assert "sm_90" in listing  # H100/H200 are among the default CMAKE_CUDA_ARCHITECTURES


def test_library_loads_and_reports_errors_instead_of_crashing(loaded_kernels) -> None:
    library = loaded_kernels.load_library()
    assert library is not None and loaded_kernels.kernel_status().startswith("loaded ")
    # Empty work is a no-op: success without touching the (null) pointers or the device.
    assert library.comcloak_compose(None, None, None, 0, 0, 0, 0, 0, None) == 0
    assert library.comcloak_attack_update(*([None] * 8), 0, 16, 0.1, 1.0, None) == 0
    if not torch.cuda.is_available():
        # Real work without a GPU: a CUDA error code (no driver / no device), never a crash.
        assert library.comcloak_compose(None, None, None, 1, 4, 4, 2, 2, None) != 0
    # CPU tensors always take the torch reference, library or not.
    x, momentum, gradient = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    lower, upper = (x - 0.02).clamp_min(0), (x + 0.02).clamp_max(1)
    torch.testing.assert_close(loaded_kernels.attack_update(x, momentum, gradient, lower, upper, -0.01, 1.0),
                               loaded_kernels.attack_update_reference(x, momentum, gradient, lower, upper, -0.01, 1.0),
                               rtol=0, atol=0)
    assert isinstance(library, ctypes.CDLL)


def test_configure_without_cuda_builds_nothing_and_succeeds(tmp_path) -> None:
    """A machine without a CUDA toolkit: nvcc off the PATH (the toolkit's own folder is found by CMake only
    through the PATH or CUDACXX)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    environment = {key: value for key, value in os.environ.items() if key not in ("CUDACXX", "CUDA_PATH")}
    environment["PATH"] = os.pathsep.join(folder for folder in os.environ["PATH"].split(os.pathsep)
                                          if not (Path(folder) / "nvcc").exists())
    result = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path)], capture_output=True, text=True,
                            check=False, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no CUDA compiler found; kernels are not built" in result.stdout
    assert not list(tmp_path.glob("*.so"))


def test_missing_library_falls_back_to_the_references(monkeypatch, tmp_path) -> None:
    import comcloak.kernels as kernels

    monkeypatch.setenv(kernels.LIBRARY_ENV, str(tmp_path / "absent.so"))
    monkeypatch.setattr(kernels, "library_candidates", lambda: [tmp_path / "absent.so"])
    kernels.load_library.cache_clear()
    try:
        assert kernels.load_library() is None and not kernels.kernels_available()
        assert kernels.kernel_status().startswith("no library built")
    finally:
        kernels.load_library.cache_clear()
