"""Reading and writing state dicts: safetensors first, torch checkpoints only with ``weights_only=True``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import safe_open as _st_safe_open
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save as _st_save_bytes
from torch import nn

from comcloak.atomic import atomic_writer
from comcloak.errors import UserError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_M = TypeVar("_M", bound=nn.Module)

# Keys under which training scripts commonly nest the state dict itself.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_LIST_LIMIT = 5  # how many offending keys an error message names before summarising


class WeightsError(UserError, ValueError):
    """A weights file is missing, undecodable, or does not fit the model; the message is one line."""


def _is_safetensors(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        return True
    # safetensors layout: u64 little-endian header length, then a JSON header starting with '{'.
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if not isinstance(obj, Mapping):
            break
        nested = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        obj = nested
    if not isinstance(obj, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"weights file {path} is not a flat state dict: entry {bad[0]!r} is not a tensor")
    state = dict(obj)
    # nn.DataParallel / DDP checkpoints prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state_dict_file(path: PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict (on CPU) from a ``.safetensors`` file or a torch checkpoint, unwrapping common wrappers.

    Torch checkpoints are read with ``weights_only=True``, so a file cannot run code on load.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    try:
        if _is_safetensors(p):
            obj: object = _st_load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoder failure becomes one clear line for the user
        raise WeightsError(f"cannot decode weights file {p}: {_first_line(exc)}") from exc
    state = _unwrap(obj, p)
    logger.debug("loaded %d tensors from %s", len(state), p)
    return state


def read_safetensors_metadata(path: PathLike) -> dict[str, str]:
    """The str -> str metadata in a safetensors header ({} for torch checkpoints or files without any)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    if not _is_safetensors(p):
        return {}
    try:
        with _st_safe_open(str(p), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # a corrupt header becomes one clear line
        raise WeightsError(f"cannot decode weights file {p}: {_first_line(exc)}") from exc


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor],
    path: PathLike,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state_dict`` as safetensors; ``dtype`` (e.g. ``torch.float16``) casts floating tensors only.

    ``metadata`` (str -> str) is stored in the file header, e.g. the architecture a ComModel was built with.
    """
    p = Path(path)
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        t = v.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        # clone: safetensors refuses tensors that share storage (tied weights, views).
        out[k] = t.contiguous().clone()
    # Through the atomic writer, as every file comcloak writes: an interrupted save leaves the old file or none.
    with atomic_writer(p) as handle:
        handle.write(_st_save_bytes(out, metadata={"format": "pt", **(metadata or {})}))
    logger.debug("saved %d tensors to %s", len(out), p)
    return p


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def load_weights(model: _M, source: PathLike | Mapping[str, torch.Tensor], strict: bool = True) -> _M:
    """Load a file or state dict into ``model`` and return it.

    With ``strict`` every model key must be present (``num_batches_tracked`` may be absent, as in old torchvision
    files), no extra keys may exist, and all shapes must match; any mismatch raises one :class:`WeightsError` line.
    """
    where = str(source) if isinstance(source, str | os.PathLike) else "state dict"
    state = load_state_dict_file(source) if isinstance(source, str | os.PathLike) else dict(source)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if shapes:  # shapes are always checked: load_state_dict would raise a multi-line error otherwise
        problems.append(f"{len(shapes)} shape mismatches ({_names(shapes)})")
    if strict and missing:
        problems.append(f"{len(missing)} missing keys ({_names(missing)})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
    if problems:
        raise WeightsError(f"weights from {where} do not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    logger.info("loaded %d tensors from %s into %s", len(state), where, type(model).__name__)
    return model


def load_pretrained(
    model: _M,
    pretrained: bool | PathLike | None,
    default_path: Callable[[], PathLike] | None = None,
    name: str = "",
) -> _M:
    """Apply a factory's ``pretrained`` argument: False/None = keep the init, True = ``default_path()``, else a path.

    Loading is strict. Without offline default weights, True raises a :class:`WeightsError` asking for a path.
    """
    if pretrained is None or pretrained is False:
        return model
    if pretrained is True:
        if default_path is None:
            raise WeightsError(
                f"no offline pretrained weights exist for {name or type(model).__name__}; "
                "pass pretrained=<path to a .safetensors or .pth state dict>"
            )
        return load_weights(model, default_path())
    return load_weights(model, pretrained)


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with every parameter's ``requires_grad`` off (attacks differentiate inputs only)."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
