"""comcloak.kernels: CUDA kernels built by the root CMakeLists.txt, each with a torch reference.

Kernels (``<name>.cu`` + ``<name>.h``, a C ABI called through ctypes on the current CUDA stream, so they are
captured by CUDA graphs like any other launch):

* ``attack_update`` — the fused update of docs/DESIGN.md §2 after the gradient: momentum, per-image L1
  normalisation, sign, step and the projection onto the eps-ball and [0, 1] (:func:`attack_update`), in two
  launches instead of eight.
* ``compose`` — the full-resolution compose of ``Cloaker.cloak``: bilinear upsampling of the attack-view
  perturbation, add to the uint8 photo, round, clip, uint8 out (:func:`compose`), without the float copy of the photo.
  A per-pixel bound (``--budget texture``) runs the torch reference.
* The texture budget's update (a per-pixel step and bound) and the ``scaled`` step rule run as
  :func:`attack_update_reference`: the ``attack_update`` kernel takes a scalar step and the sign
  (``attacks/loop.run_attack`` picks the reference then).

Both are registered as torch ops (``torch.ops.comcloak.attack_update``, ``torch.ops.comcloak.compose``). An op runs
the CUDA kernel when its tensors are on a CUDA device and the library is loaded, and its torch reference otherwise
(CPU tensors, or no library: a CPU-only install never builds one).

Building (needs a CUDA toolkit; without one CMake configures and builds nothing)::

    cmake -S . -B build && cmake --build build      # -> build/libcomcloak_kernels.so

The library is looked up in ``$COMCLOAK_KERNELS_LIBRARY``, then next to this package, then in ``build/`` of the source
checkout this package lives in (an editable install). :func:`kernel_status` says which was loaded, or why none was.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from comcloak.defaults import STEP_RULES

logger = logging.getLogger(__name__)

__all__ = ["LIBRARY_ENV", "LIBRARY_NAME", "KernelError", "attack_update", "attack_update_reference", "compose",
           "compose_reference", "kernel_status", "kernels_available", "library_candidates", "load_library",
           "step_direction"]

LIBRARY_ENV = "COMCLOAK_KERNELS_LIBRARY"
LIBRARY_NAME = "libcomcloak_kernels.so"
L1_FLOOR = 1e-12  # keeps an all-zero gradient from producing NaNs (same floor in the kernel)
SIGN_RULE, SCALED_RULE = STEP_RULES  # the sign step (the kernel's) and the non-sign step of Cheng et al. 2021


class KernelError(RuntimeError):
    """A CUDA kernel reported an error (an internal bug or a broken CUDA setup, not a user error)."""


# --------------------------------------------------------------------------------------------------- references


def step_direction(momentum: torch.Tensor, rule: str = SIGN_RULE) -> torch.Tensor:
    """The direction a step moves each pixel by (times the step size): ``sign(m)``, or with ``rule="scaled"``
    ``m · ||sign(m)||₂ / ||m||₂`` per image (FGNM, Cheng et al., "Fast Gradient Non-sign Methods", 2021): the same
    L2 length as the sign step, spread in proportion to the momentum, so pixels with little gradient move little
    (after the projection onto the eps-ball, the cloak carries less change for the same L∞ bound).

    Args:
        momentum: float (N, ...); the norms are per image (over all but dim 0).
        rule: ``sign`` or ``scaled`` (:data:`STEP_RULES`).

    Returns:
        a tensor shaped like ``momentum``.

    Example:
        >>> step_direction(torch.tensor([[3.0, -1.0, 0.0]]), "scaled")  # |sign| = sqrt(2), |m| = sqrt(10)
        tensor([[ 1.3416, -0.4472,  0.0000]])
    """
    if rule == SIGN_RULE:
        return momentum.sign()
    if rule != SCALED_RULE:
        raise ValueError(f"step rule must be one of {', '.join(STEP_RULES)}, got {rule!r}")
    dims = tuple(range(1, momentum.dim()))
    sign_length = momentum.sign().abs().sum(dim=dims, keepdim=True).sqrt()  # sqrt of the count of non-zero entries
    length = momentum.square().sum(dim=dims, keepdim=True).sqrt().clamp_min(L1_FLOOR)
    return momentum * (sign_length / length)


def attack_update_reference(
    x: torch.Tensor,
    momentum: torch.Tensor,
    gradient: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    step: float | torch.Tensor,
    mu: float | torch.Tensor,
    rule: str = SIGN_RULE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The update of docs/DESIGN.md §2 in torch: ``m = mu*m + g / mean(|g|)``,
    ``x = clip(x + step*direction(m), lower, upper)``.

    Args:
        x, momentum, gradient: float tensors shaped (N, ...); the mean is per image (over all but dim 0).
        lower, upper: ``max(x0 - eps, 0)`` and ``min(x0 + eps, 1)``, shaped like x.
        step: ``+alpha`` (untargeted, ascend the loss) or ``-alpha`` (targeted, descend); or per pixel.
        mu: momentum factor; 0 gives BIM/FGSM.
        rule: the direction, ``sign(m)`` (the paper's) or ``scaled`` (:func:`step_direction`).

    Returns:
        ``(x_next, m_next)``, new tensors.
    """
    dims = tuple(range(1, gradient.dim()))
    scale = gradient.abs().mean(dim=dims, keepdim=True).clamp_min(L1_FLOOR)
    momentum = mu * momentum + gradient / scale
    x = torch.minimum(torch.maximum(x + step * step_direction(momentum, rule), lower), upper)
    return x, momentum


def compose_reference(photo: torch.Tensor, delta: torch.Tensor, bound: torch.Tensor | None = None) -> torch.Tensor:
    """``clamp(round(photo + 255 * bilinear(delta)), 0, 255)`` as uint8; with a per-pixel ``bound``, the upsampled
    delta is clipped to ``[-bound, bound]`` first.

    Args:
        photo: uint8 (N, H, W, 3), the originals.
        delta: float (N, 3, h, w), the attack-view perturbation on the [0, 1] scale; resized to (H, W) with
            ``F.interpolate(mode="bilinear", align_corners=False)`` when (h, w) differs.
        bound: float (N, 1, H, W) on the [0, 1] scale, or None: the texture budget's ``eps * factor`` at full
            resolution (``comcloak.attacks.budget.texture_budget`` of the photo), so the budget holds per output
            pixel, not only at the attack view.

    Returns:
        uint8 (N, H, W, 3). The photo is exact on the 0-255 grid, so ``|change| <= round(255 * max|delta|)``
        (``<= round(255 * bound)`` per pixel with a bound).

    Example:
        >>> compose_reference(photo, delta, bound=eps * factors).shape == photo.shape
        True
    """
    height, width = photo.shape[1:3]
    if delta.shape[-2:] != (height, width):
        delta = F.interpolate(delta.float(), size=(height, width), mode="bilinear", align_corners=False)
    if bound is not None:
        bound = bound.to(delta)
        delta = torch.minimum(torch.maximum(delta, -bound), bound)
    cloaked = (photo.permute(0, 3, 1, 2).float() + 255.0 * delta).round_().clamp_(0, 255)
    return cloaked.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# ------------------------------------------------------------------------------------------------------ library


def library_candidates() -> list[Path]:
    """Where the kernel library is looked for, in order (module docstring)."""
    candidates = []
    if os.environ.get(LIBRARY_ENV):
        candidates.append(Path(os.environ[LIBRARY_ENV]))
    package = Path(__file__).resolve().parent
    candidates += [package / LIBRARY_NAME, package.parent / "build" / LIBRARY_NAME]
    return candidates


_status = "not loaded yet"


@functools.cache
def load_library() -> ctypes.CDLL | None:
    """The kernel library, or None when there is none (logged once, and kept in :func:`kernel_status`)."""
    global _status
    explicit = os.environ.get(LIBRARY_ENV)
    for path in library_candidates():
        if not path.is_file():
            if explicit and path == Path(explicit):
                logger.warning("%s=%s: no such file", LIBRARY_ENV, explicit)
            continue
        try:
            library = ctypes.CDLL(str(path))
        except OSError as error:
            _status = f"{path}: cannot load ({error})"
            logger.warning("comcloak kernels: %s", _status)
            return None
        _declare(library)
        _status = f"loaded {path}"
        logger.info("comcloak kernels: %s", _status)
        return library
    _status = "no library built (searched " + ", ".join(str(path) for path in library_candidates()) + ")"
    logger.info("comcloak kernels: %s; using the torch references", _status)
    return None


def kernel_status() -> str:
    """One line: which kernel library is loaded, or why none is."""
    load_library()
    return _status


def kernels_available() -> bool:
    """Whether the CUDA kernels can run: a library is loaded and torch sees a CUDA device."""
    return load_library() is not None and torch.cuda.is_available()


def _declare(library: ctypes.CDLL) -> None:
    pointer, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    library.comcloak_attack_update.argtypes = [pointer] * 8 + [i64, i64, f32, f32, pointer]
    library.comcloak_attack_update.restype = ctypes.c_int
    library.comcloak_compose.argtypes = [pointer] * 3 + [i64] * 5 + [pointer]
    library.comcloak_compose.restype = ctypes.c_int


def _stream(device: torch.device) -> ctypes.c_void_p:
    return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)


def _check(name: str, status: int) -> None:
    if status != 0:
        raise KernelError(f"{name} failed with CUDA error {status}")


def _same_layout(*tensors: torch.Tensor) -> bool:
    """All float32, one device, one shape, one dense layout with the batch outermost (contiguous/channels_last)."""
    first = tensors[0]
    dense = first.is_contiguous() or (first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last))
    return dense and all(t.dtype == torch.float32 and t.device == first.device and t.shape == first.shape
                         and t.stride() == first.stride() for t in tensors)


# ---------------------------------------------------------------------------------------------------------- ops


@torch.library.custom_op("comcloak::attack_update", mutates_args=())
def attack_update(
    x: torch.Tensor,
    momentum: torch.Tensor,
    gradient: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    step: float,
    mu: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attack_update_reference`, as the ``attack_update`` CUDA kernel when the tensors are on a CUDA device.

    The kernel needs float32 tensors of one shape and one dense layout (contiguous or channels_last); others are
    made contiguous first. Its per-image sum of |g| is ordered differently from torch's, so ``m_next`` agrees with
    the reference to float32 rounding (relative 1e-5) and ``x_next`` exactly except where ``m_next`` is within
    rounding of 0.
    """
    library = load_library() if x.is_cuda else None
    if library is None:
        return attack_update_reference(x, momentum, gradient, lower, upper, step, mu)
    tensors = (x, momentum, gradient, lower, upper)
    if not _same_layout(*tensors):
        tensors = tuple(t.float().contiguous() for t in tensors)
    x, momentum, gradient, lower, upper = tensors
    x_next, m_next = torch.empty_like(x), torch.empty_like(momentum)
    images = x.shape[0]
    sums = torch.empty(images, device=x.device, dtype=torch.float32)
    with torch.cuda.device(x.device):
        status = library.comcloak_attack_update(
            x.data_ptr(), momentum.data_ptr(), gradient.data_ptr(), lower.data_ptr(), upper.data_ptr(),
            x_next.data_ptr(), m_next.data_ptr(), sums.data_ptr(), images, x[0].numel() if images else 0,
            float(step), float(mu), _stream(x.device))
    _check("comcloak_attack_update", status)
    return x_next, m_next


@attack_update.register_fake
def _(x, momentum, gradient, lower, upper, step, mu):  # noqa: ANN001, ANN202 - shapes only
    return torch.empty_like(x), torch.empty_like(momentum)


@torch.library.custom_op("comcloak::compose", mutates_args=())
def compose(photo: torch.Tensor, delta: torch.Tensor, bound: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`compose_reference`, as the ``compose`` CUDA kernel when both tensors are on a CUDA device and no
    per-pixel ``bound`` is given (the kernel bounds nothing: with a bound, the texture budget's, the reference runs).

    The kernel's bilinear weights follow PyTorch's ``align_corners=False`` source index; its float sums are ordered
    differently, so a value within rounding of a half grey level may round the other way: outputs agree with the
    reference to within 1 grey level, and exactly on all but a tiny fraction of values.
    """
    if photo.dtype != torch.uint8 or photo.dim() != 4 or photo.shape[-1] != 3:
        raise ValueError(f"photo must be uint8 shaped (N, H, W, 3), got {photo.dtype} {tuple(photo.shape)}")
    if delta.dim() != 4 or delta.shape[:2] != (photo.shape[0], 3):
        raise ValueError(f"delta must be shaped ({photo.shape[0]}, 3, h, w), got {tuple(delta.shape)}")
    library = load_library() if photo.is_cuda and delta.is_cuda and bound is None else None
    if library is None:
        return compose_reference(photo, delta, bound)
    photo = photo.contiguous()
    delta = delta.float().contiguous()
    out = torch.empty_like(photo)
    images, height, width = photo.shape[:3]
    with torch.cuda.device(photo.device):
        status = library.comcloak_compose(photo.data_ptr(), delta.data_ptr(), out.data_ptr(), images, height, width,
                                          delta.shape[2], delta.shape[3], _stream(photo.device))
    _check("comcloak_compose", status)
    return out


@compose.register_fake
def _(photo, delta, bound=None):  # noqa: ANN001, ANN202 - shapes only
    return torch.empty_like(photo)
