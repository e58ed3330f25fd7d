"""Saving, loading and finding trained ComModels (the paper's ``comodel`` and the transform-coding ``comodel_tc``).

A trained ComModel file is safetensors with its architecture in the header (``comcloak.arch``,
``comcloak.config`` as JSON) and the codec it imitates (``comcloak.codec``), so a file alone rebuilds its model.
Files without that header (older or foreign paper-ComModel state dicts) are read as the paper architecture, its
width inferred from the stem's channel count.

Shipped weights live in ``models/weights/comodel-<codec>.safetensors`` and are found by codec spec:
``shipped_comodel_path("jpeg:50")``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from comcloak.codecs import CodecSpecError, parse_codec

from .comodel import ComModel
from .comodel_tc import TransformComModel, TransformComModelConfig
from .weights import PathLike, WeightsError, load_state_dict_file, read_safetensors_metadata, save_safetensors

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ARCH_KEY = "comcloak.arch"
CONFIG_KEY = "comcloak.config"
CODEC_KEY = "comcloak.codec"


def comodel_architecture(model: nn.Module) -> tuple[str, dict]:
    """(architecture name, config dict) of a ComModel instance, as stored in its file header."""
    if isinstance(model, TransformComModel):
        return "comodel_tc", model.config.as_dict()
    if isinstance(model, ComModel):
        return "comodel", {"width": model.width}
    raise TypeError(f"not a ComModel: {type(model).__name__}")


def build_comodel(arch: str, config: dict) -> nn.Module:
    """A fresh ComModel of architecture ``arch`` ('comodel' or 'comodel_tc') with ``config``."""
    try:
        if arch == "comodel_tc":
            return TransformComModel(TransformComModelConfig(**config))
        if arch == "comodel":
            return ComModel(**config)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"invalid {arch} configuration {config!r}: {exc}") from None
    raise WeightsError(f"unknown ComModel architecture {arch!r}; known: comodel, comodel_tc")


def save_comodel(
    model: nn.Module, path: PathLike, codec: str | None = None, dtype: torch.dtype | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` as safetensors with its architecture and ``codec`` spec in the header."""
    arch, config = comodel_architecture(model)
    metadata = {ARCH_KEY: arch, CONFIG_KEY: json.dumps(config, sort_keys=True), **(extra or {})}
    if codec is not None:
        metadata[CODEC_KEY] = codec
    return save_safetensors(model.state_dict(), path, dtype=dtype, metadata=metadata)


def load_comodel(path: PathLike) -> nn.Module:
    """Rebuild the ComModel stored in ``path`` (float32, eval mode). Raises WeightsError with one line on failure."""
    metadata = read_safetensors_metadata(path)
    state = load_state_dict_file(path)
    arch = metadata.get(ARCH_KEY)
    if arch is None:
        stem = state.get("stem.conv.weight")
        if stem is None or stem.dim() != 4:
            raise WeightsError(f"{path} is not a ComModel: no architecture header and no 'stem.conv.weight'")
        arch, config = "comodel", {"width": stem.shape[0] / 64}
    else:
        try:
            config = json.loads(metadata.get(CONFIG_KEY, "{}"))
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{path}: unreadable {CONFIG_KEY} header: {exc}") from None
    model = build_comodel(arch, config)
    try:
        model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit {arch} {config}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def comodel_codec(path: PathLike) -> str | None:
    """The codec spec a ComModel file was trained to imitate (None when the header does not say)."""
    return read_safetensors_metadata(path).get(CODEC_KEY)


def canonical_codec(spec: str) -> str:
    """``spec`` in canonical form (``JPEG:050`` -> ``jpeg:50``); raises CodecSpecError."""
    return parse_codec(spec).spec


def shipped_file_name(codec: str) -> str:
    """File name of the shipped ComModel for ``codec``: ``comodel-jpeg-50.safetensors``."""
    return "comodel-" + canonical_codec(codec).replace(":", "-").replace("+", "_") + ".safetensors"


def list_shipped_comodels(weights_dir: PathLike | None = None) -> dict[str, Path]:
    """Codec spec -> shipped ComModel file in ``weights_dir`` (default :data:`WEIGHTS_DIR`), read from headers."""
    found: dict[str, Path] = {}
    for path in sorted(Path(weights_dir or WEIGHTS_DIR).glob("comodel-*.safetensors")):
        codec = comodel_codec(path)
        if codec:
            found[codec] = path
    return found


def shipped_comodel_path(codec: str, weights_dir: PathLike | None = None) -> Path:
    """The shipped ComModel file for ``codec``; raises WeightsError naming the codecs that have one."""
    try:
        wanted = canonical_codec(codec)
    except CodecSpecError as exc:
        raise WeightsError(f"comodel:{codec}: {exc}") from None
    shipped = list_shipped_comodels(weights_dir)
    if wanted not in shipped:
        available = ", ".join(sorted(shipped)) or "none"
        raise WeightsError(
            f"no shipped ComModel for codec {wanted!r}; shipped: {available} (train one with 'comcloak train')"
        )
    return shipped[wanted]
