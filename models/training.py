"""Training a ComModel on (original, compressed) pairs: Adam, L1 loss, cosine learning-rate decay, checkpoints.

The pairs come from :mod:`comcloak.codecs.pairs` (a photo folder plus a codec simulated locally, or real platform
pairs). Each step draws ``batch`` random crops of ``crop`` pixels whose offsets are multiples of 16, so the codec's
block grid (JPEG MCUs, VP8 macroblocks; the codec ran on the whole view with its grid at the top-left pixel) falls
on the model's own block grid. Validation is the mean absolute error on the 0..255 scale of the rounded, clipped
model output against the real codec on whole held-out views (the ``eval-commodel`` measure).

Determinism: the model is initialised from ``torch.manual_seed(seed)``, and the crops of step ``k`` come from
``numpy.random.default_rng([seed, k])``, so a run resumed from a checkpoint continues exactly as an uninterrupted
one would (same thread count, same machine).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comcloak.atomic import atomic_writer
from comcloak.codecs import Codec, ComModelSetting
from comcloak.codecs.pairs import PairSet, training_crops
from comcloak.codecs.tensors import to_tensor

from .comodel_io import build_comodel, comodel_architecture
from .comodel_tc import TransformComModel, TransformComModelConfig

logger = logging.getLogger(__name__)

# Learning-rate multipliers per parameter kind. The structured layers (colour, block transforms, chroma
# resampling) start at the right answer and are on large scales, so full-rate Adam would throw that away.
_STRUCTURE_LR = 0.01
_STEP_LR = 0.1
_GRID = 16


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one ComModel training run.

    Args:
        steps: optimiser steps. Default 3000.
        batch: crops per step. Default 16.
        crop: crop side in pixels, a multiple of 16, at most the view size. Default 128.
        lr: peak Adam learning rate; it decays along a cosine to ``lr * final_lr_fraction``. Default 1e-3.
        final_lr_fraction: where the cosine ends. Default 0.01.
        seed: initialisation and crop sampling seed. Default 0.
        validate_every: steps between validation passes (and progress reports). Default 250.
        checkpoint_every: steps between resumable checkpoints (0: none). Default 500.
    """

    steps: int = 3000
    batch: int = 16
    crop: int = 128
    lr: float = 1e-3
    final_lr_fraction: float = 0.01
    seed: int = 0
    validate_every: int = 250
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "crop", "validate_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.crop % _GRID:
            raise ValueError(f"crop must be a multiple of {_GRID}, got {self.crop}")
        if not self.lr > 0 or not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"need lr > 0 and 0 < final_lr_fraction <= 1, got {self.lr}, {self.final_lr_fraction}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


@dataclass(frozen=True)
class TrainProgress:
    """One progress report: ``loss`` is the mean training L1 since the last report, both MAEs on 0..255."""

    step: int
    steps: int
    loss: float
    val_mae: float
    identity_mae: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    val_mae: float
    identity_mae: float
    seconds: float
    history: list[TrainProgress]


@torch.no_grad()
def comodel_mae(model: nn.Module, originals: np.ndarray, compressed: np.ndarray, batch_size: int = 16) -> float:
    """MAE (0..255) between the rounded, clipped output of ``model`` on ``originals`` and ``compressed`` (NHWC)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(originals), batch_size):
        out = model(to_tensor(originals[start : start + batch_size])).clamp(0.0, 1.0).mul(255.0).round()
        target = to_tensor(compressed[start : start + batch_size]).mul(255.0)
        total += (out - target).abs().sum().item()
    model.train(was_training)
    return total / compressed.size


def identity_mae(pairs: PairSet) -> float:
    """MAE (0..255) of doing nothing: the uncompressed image against the compressed one."""
    return float(np.abs(pairs.originals.astype(np.float64) - pairs.compressed).mean())


def _parameter_groups(model: nn.Module, lr: float) -> list[dict]:
    structure, steps, rest = [], [], []
    for name, parameter in model.named_parameters():
        if name.endswith("log_step"):
            steps.append(parameter)
        elif name.startswith(("colour", "inverse_colour", "chroma_down", "chroma_up")) or ".analysis." in name \
                or ".synthesis." in name:
            structure.append(parameter)
        else:
            rest.append(parameter)
    groups = [
        {"params": rest, "lr": lr, "scale": 1.0},
        {"params": steps, "lr": lr * _STEP_LR, "scale": _STEP_LR},
        {"params": structure, "lr": lr * _STRUCTURE_LR, "scale": _STRUCTURE_LR},
    ]
    return [group for group in groups if group["params"]]


def _lr_at(config: TrainConfig, step: int) -> float:
    """Cosine decay from ``lr`` at step 0 to ``lr * final_lr_fraction`` at the last step."""
    progress = step / max(1, config.steps - 1)
    floor = config.final_lr_fraction
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    config: TrainConfig, codec: str, history: list[TrainProgress]) -> None:
    """Write a resumable checkpoint atomically (temp file, then rename)."""
    arch, arch_config = comodel_architecture(model)
    state = {
        "format": "comcloak-train-checkpoint-1",
        "arch": arch,
        "arch_config": arch_config,
        "codec": codec,
        "train_config": asdict(config),
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": [asdict(entry) for entry in history],
    }
    with atomic_writer(path) as handle:
        torch.save(state, handle)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs on load)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "comcloak-train-checkpoint-1":
        raise ValueError(f"{path} is not a comcloak training checkpoint")
    return state


def train_comodel(
    model: nn.Module,
    train_pairs: PairSet,
    val_pairs: PairSet,
    config: TrainConfig,
    codec: str = "",
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place to map ``train_pairs.originals`` to ``train_pairs.compressed``.

    Args:
        model: a ComModel (``comodel``/``comodel_tc`` family), freshly built or loaded.
        train_pairs: training views (N, S, S, 3) uint8, S >= ``config.crop``.
        val_pairs: held-out whole views, scored every ``config.validate_every`` steps and at the end.
        config: hyper-parameters.
        codec: the codec spec being imitated (stored in checkpoints).
        checkpoint: where to write resumable checkpoints (every ``config.checkpoint_every`` steps and at the end).
        resume: continue from ``checkpoint`` if it exists; its architecture, codec and config must match.
        progress: called with a :class:`TrainProgress` at every validation.

    Returns:
        A :class:`TrainResult` with the trained model (eval mode) and the final validation MAE.
    """
    if train_pairs.size < config.crop:
        raise ValueError(f"crop {config.crop} is larger than the training views ({train_pairs.size} px)")
    if val_pairs.size % _GRID:
        raise ValueError(f"validation views must be a multiple of {_GRID} px, got {val_pairs.size}")
    optimizer = torch.optim.Adam(_parameter_groups(model, config.lr), lr=config.lr)
    history: list[TrainProgress] = []
    start_step = 0
    if resume and checkpoint is not None and checkpoint.is_file():
        start_step, history = _resume(checkpoint, model, optimizer, config, codec)

    baseline = identity_mae(val_pairs)
    began = time.perf_counter() - (history[-1].seconds if history else 0.0)
    model.train()
    running, counted = 0.0, 0
    val_mae = history[-1].val_mae if history else float("nan")
    for step in range(start_step, config.steps):
        lr = _lr_at(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["scale"]
        rng = np.random.default_rng([config.seed, step])
        originals, compressed = training_crops(train_pairs, config.batch, config.crop, rng, align=_GRID)
        loss = F.l1_loss(model(to_tensor(originals)), to_tensor(compressed))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item() * 255.0
        counted += 1
        done = step + 1
        if done % config.validate_every == 0 or done == config.steps:
            val_mae = comodel_mae(model, val_pairs.originals, val_pairs.compressed)
            report = TrainProgress(done, config.steps, running / counted, val_mae, baseline, lr,
                                   time.perf_counter() - began)
            history.append(report)
            running, counted = 0.0, 0
            logger.info("step %d/%d loss %.3f val MAE %.3f (identity %.3f)", done, config.steps, report.loss,
                        val_mae, baseline)
            if progress is not None:
                progress(report)
        if checkpoint is not None and config.checkpoint_every and (
            done % config.checkpoint_every == 0 or done == config.steps
        ):
            save_checkpoint(checkpoint, model, optimizer, done, config, codec, history)
    model.eval()
    seconds = history[-1].seconds if history else time.perf_counter() - began
    return TrainResult(model, config.steps, val_mae, baseline, seconds, history)


def _resume(
    checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, codec: str
) -> tuple[int, list[TrainProgress]]:
    """Load ``checkpoint`` into ``model`` and ``optimizer``; returns (the step to continue from, the history so far).
    Raises ValueError when it was written for another architecture, codec or settings."""
    state = load_checkpoint(checkpoint)
    arch, arch_config = comodel_architecture(model)
    if (state["arch"], state["arch_config"], state["codec"]) != (arch, arch_config, codec):
        raise ValueError(
            f"checkpoint {checkpoint} is for {state['arch']} {state['arch_config']} on {state['codec']!r}, "
            f"not {arch} {arch_config} on {codec!r}"
        )
    if state["train_config"] != asdict(config):
        raise ValueError(f"checkpoint {checkpoint} was written with different settings: {state['train_config']}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start_step = int(state["step"])
    logger.info("resumed from %s at step %d", checkpoint, start_step)
    return start_step, [TrainProgress(**entry) for entry in state["history"]]


def new_comodel(arch: str, config: dict, seed: int) -> nn.Module:
    """A freshly initialised ComModel, its random init drawn from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return build_comodel(arch, config)


CALIBRATION_QUALITIES = (0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100)
CALIBRATION_VIEWS = 48


def default_comodel_config(codec: Codec | None, pairs: PairSet, tiny: bool = False) -> dict:
    """The ``comodel_tc`` architecture for ``codec``, with the initial quantisation steps calibrated on ``pairs``.

    Block size, chroma subsampling and the initial quality are what the codec declares
    (``Codec.comodel_setting``): JPEG 8x8 with 4:2:0 (or 4:4:4 when asked) at its own quality, WebP (VP8) 4x4 with
    4:2:0, everything else (JPEG 2000, chains whose resize hides the codec's grid at the attack resolution, unknown
    platforms) 8x8 with full-resolution chroma. Without a declared quality, the initial quality is the IJG quality
    whose untrained coder best matches the first views of ``pairs`` (0, the transparent start, when passing the
    image through beats every table). Training then adapts every step size.
    """
    setting = codec.comodel_setting() if codec is not None else ComModelSetting()
    block, subsampling, quality = setting.block, setting.chroma_subsampling, setting.init_quality
    if quality is None:
        quality = calibrate_init_quality(pairs, block, subsampling)
    return {"block": block, "chroma_subsampling": subsampling, "init_quality": quality,
            "refine_width": 4 if tiny else 32, "refine_levels": 0}


@torch.no_grad()
def calibrate_init_quality(pairs: PairSet, block: int, subsampling: int) -> int:
    """The quality in :data:`CALIBRATION_QUALITIES` whose untrained, unrefined coder has the lowest MAE on pairs."""
    originals = pairs.originals[:CALIBRATION_VIEWS]
    compressed = pairs.compressed[:CALIBRATION_VIEWS]
    scores = {}
    for quality in CALIBRATION_QUALITIES:
        coder = TransformComModel(TransformComModelConfig(block, subsampling, quality, 0))
        scores[quality] = comodel_mae(coder, originals, compressed)
    best = min(scores, key=scores.get)
    logger.info("initial quality %d (calibration MAE %s)", best,
                ", ".join(f"q{q} {mae:.2f}" for q, mae in scores.items()))
    return best
