"""The face cloak's loop on ONNX Runtime: the exported face step (``comcloak.export.face_step``) run step after step.

:class:`FaceOnnxRuntimeRunner` is the classifier's :class:`~.onnxruntime_runner.OnnxRuntimeRunner` (IOBinding over
ping-pong buffers, the loop's draws sampled on the host with the torch loop's ``DrawSampler``)
with the face step's three extra inputs: the clean ``gallery`` (staged once per face) and the alignment draws'
gather taps (written before each step from the face's :class:`~comcloak.attacks.faces.view.IdentityView`, whose
generator the torch loop draws from in the same order), so both backends run the same draws and give the same cloak
up to float32 rounding. :class:`FaceOnnxRuntimeLoop` is what ``cloak_faces(..., backend="onnxruntime")`` runs per
face: it exports the graph once per recogniser, stand-in, size and draws (:class:`FaceStepGraphCache`, on disk) and
keeps one ONNX Runtime session per graph and thread count in the process.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from comcloak.attacks.faces.settings import FaceCloakConfig
from comcloak.attacks.through import make_through
from comcloak.export.face_export import export_face_step
from comcloak.export.face_step import FACE_INPUTS, FACE_KIND, FaceStepLayout, face_tensor_shapes, warp_inputs
from comcloak.export.onnx_export import OPSET, model_fingerprint
from comcloak.export.step_io import StepSpec

from .exported import StepBuffers
from .factory import default_cache_dir
from .onnxruntime_runner import OnnxRuntimeRunner
from .registry import BackendUnavailableError

logger = logging.getLogger(__name__)

FACE_GRAPH_FORMAT_VERSION = "4"  # bump when the face step graph changes (2: PRelu as Relu, Sub, Mul, Add;
# 3: the per-pixel budget input; 4: PRelu and its VJP in the blocked layout, export/blocked_layout.py)
INT_INPUTS = ("warp_index",)
# torch's threads for the host's work between steps (the draws, the taps, the copies): small ops, whose OpenMP
# workers spin after each and so take a core from ONNX Runtime's threads (docs/faces.md, "Speed").
HOST_THREADS = 1
_SESSIONS: dict[tuple[str, int | None], Any] = {}  # (graph path, threads) -> session, for the whole process
_SESSIONS_LOCK = threading.Lock()


@contextmanager
def host_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block, restored after it (they are the process's: the
    face loop runs one face at a time, and serve cloaks on one worker thread).

    The host's per-step work is small elementwise ops; with two threads their OpenMP workers spin between ops and
    after the last, taking the cores ONNX Runtime's own threads need. Measured under other jobs' load on this 2-core
    CPU, 20 steps of the ``faces`` preset's draws and taps: 53 ms wall (41 ms CPU) per step with 2 threads, 9 ms
    (4.5 ms CPU) with 1, the same values bit for bit.

    Example:
        >>> with host_threads(1):
        ...     draws = sampler.sample(1, 224, 224)
    """
    before = torch.get_num_threads()
    if before == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FaceStepGraphCache:
    """Exports the face step once per recogniser, stand-in, working-view size, loss and draws, and keeps it on disk
    (``face-step-<hash>.onnx`` under ``cache_dir``; default ``$XDG_CACHE_HOME/comcloak``)."""

    def __init__(self, recogniser: nn.Module, through: nn.Module | None, spec: StepSpec,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.recogniser, self.through, self.spec = recogniser, through, spec
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._lock = threading.Lock()

    def path_for(self, size: int) -> Path:
        key = model_fingerprint(self.recogniser, self.through,
                                extra={"kind": FACE_KIND, "size": size, "opset": OPSET, "loss": self.spec.loss,
                                       "format": FACE_GRAPH_FORMAT_VERSION, "eot": repr(self.spec.eot),
                                       **self.spec.rule_key()})
        path = self.cache_dir / f"face-step-{key}.onnx"
        with self._lock:
            if not path.is_file():
                logger.info("exporting the face step for %dx%d working views to %s", size, size, path)
                recogniser = copy.deepcopy(self.recogniser).cpu().float().eval()
                through = copy.deepcopy(self.through).cpu().float().eval() if self.through is not None else None
                export_face_step(recogniser, through, size, path, self.spec)
        return path


class FaceOnnxRuntimeRunner(OnnxRuntimeRunner):
    """The face step graph on ONNX Runtime's CPU provider: :meth:`attack` runs the whole loop on one face.

    Args:
        onnx: the face step graph (a path, or a loader called at activation).
        config: the loop's configuration (the face cloak's ``attack``).
        threads: intra-op threads (default: ONNX Runtime's, one per core).
    """

    name = "onnxruntime"
    # The host works between steps (the draws, the taps, in torch): ONNX Runtime's idle threads should sleep rather
    # than spin for work meanwhile, taking the cores the host needs.
    session_config = {"session.intra_op.allow_spinning": "0"}

    def __init__(self, onnx: Any, config: Any, threads: int | None = None) -> None:
        super().__init__(onnx, config, "cpu", cuda_graphs=False, threads=threads)
        self.view: nn.Module | None = None
        self.eps_map: torch.Tensor | None = None

    def graph_path(self) -> Path:
        path = super().graph_path()
        if self.metadata.get("kind") != FACE_KIND:
            raise BackendUnavailableError(f"{self.name}: {path} is not a face step graph")
        self.layout = FaceStepLayout.from_metadata(self.metadata)
        return path

    def activate_impl(self) -> None:
        key = (str(self.graph_path()), self.threads)
        with _SESSIONS_LOCK:
            if key not in _SESSIONS:
                super().activate_impl()
                _SESSIONS[key] = (self.session, self._ort)
            self.session, self._ort = _SESSIONS[key]

    def bind(self, buffers: StepBuffers) -> None:
        shapes = face_tensor_shapes(buffers.batch, self.shape[0], self.num_classes, self.layout)
        for name in FACE_INPUTS:
            dtype = torch.int64 if name in INT_INPUTS else torch.float32
            buffers.tensors[name] = torch.zeros(shapes[name], dtype=dtype, device=self.device)
        super().bind(buffers)

    def stage(self, buffers: StepBuffers, x0: torch.Tensor, goal: torch.Tensor) -> None:
        super().stage(buffers, x0, goal)
        gallery = buffers.tensors["gallery"]
        gallery.zero_()
        gallery[: x0.shape[0]].copy_(self.view.gallery.to(gallery).expand(x0.shape[0], -1, -1))
        budget = buffers.tensors["budget"]
        budget.fill_(1.0)  # the flat budget (and padding rows)
        if self.eps_map is not None:
            budget[: x0.shape[0]].copy_(self.eps_map.detach().to(budget).clamp(0.0, 1.0))

    def prepare_step(self, buffers: StepBuffers) -> None:
        """The loop's draws (the base class), then the alignment draws as gather taps, from the face's view."""
        super().prepare_step(buffers)
        draws = self.layout.draws
        index, weight = warp_inputs(self.view, buffers.rows * draws, self.shape[0])
        taps = (buffers.rows, draws, *index.shape[1:])
        buffers.tensors["warp_index"][: buffers.rows].copy_(index.reshape(taps))
        buffers.tensors["warp_weight"][: buffers.rows].copy_(weight.reshape(taps))

    def attack(self, view: nn.Module, x0: torch.Tensor, eps_map: torch.Tensor | None = None) -> torch.Tensor:
        """The loop on the working views ``x0`` (1, 3, S, S) of one face whose "classifier" is ``view`` (an
        ``IdentityView``; its gallery and jitter generator are used), bounded per pixel by ``eps_map`` (1, 1, S, S)
        factors of eps as ``run_attack``'s (None: the flat budget): the adversarial views."""
        if x0.shape[0] != 1:
            raise ValueError(f"the face loop attacks one face at a time, got {x0.shape[0]} views")
        if eps_map is not None and tuple(eps_map.shape) != (1, 1, *x0.shape[2:]):
            raise ValueError(f"eps_map must be shaped (1, 1, {x0.shape[2]}, {x0.shape[3]}), got {tuple(eps_map.shape)}")
        self.view, self.eps_map = view, eps_map
        try:
            with host_threads(HOST_THREADS):
                return self.infer(x0, torch.zeros(1, dtype=torch.long))
        finally:
            self.view, self.eps_map = None, None


class FaceOnnxRuntimeLoop:
    """``loop(view, x0, through, eps_map) -> adversarial``: the face cloak's loop on ONNX Runtime (``cloak_faces(...,
    backend="onnxruntime")``), for one recogniser and face configuration.

    Example:
        >>> loop = FaceOnnxRuntimeLoop(create_face_model("sface"), face_config("faces"))
        >>> adversarial = loop(view, x0, through, eps_map)
    """

    def __init__(self, recogniser: nn.Module, config: FaceCloakConfig, cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None) -> None:
        self.recogniser, self.config = recogniser, config
        self.cache_dir, self.threads = cache_dir, threads
        self._runner: FaceOnnxRuntimeRunner | None = None

    def runner(self, through: nn.Module | None) -> FaceOnnxRuntimeRunner:
        """The activated runner (the graph exported or found in the cache on first use)."""
        if self._runner is None:
            through = through if through is not None else make_through(self.config.attack.through)
            graphs = FaceStepGraphCache(self.recogniser, through, StepSpec.from_config(self.config.attack),
                                        self.cache_dir)
            size = self.config.face.work_size
            self._runner = FaceOnnxRuntimeRunner(lambda: graphs.path_for(size), self.config.attack, self.threads)
            self._runner.activate()
        return self._runner

    def __call__(self, view: nn.Module, x0: torch.Tensor, through: nn.Module | None = None,
                 eps_map: torch.Tensor | None = None) -> torch.Tensor:
        return self.runner(through).attack(view, x0, eps_map)
