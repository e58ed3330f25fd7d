"""Codec base class and the errors shared by every codec."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from comcloak import defaults
from comcloak.errors import UserError


class CodecSpecError(UserError, ValueError):
    """A codec spec string could not be parsed; the message is one line naming what was asked and what is valid."""


class CodecUnavailableError(UserError, RuntimeError):
    """The codec parsed fine but this Pillow build cannot run it (e.g. no AVIF support)."""


def check_image(image: np.ndarray, what: str = "image") -> None:
    """Raise ValueError unless ``image`` is an HxWx3 uint8 RGB array with at least one pixel."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{what} must be an HxWx3 uint8 RGB array, got shape {image.shape} dtype {image.dtype}")


def check_batch(batch: np.ndarray) -> None:
    """Raise ValueError unless ``batch`` is an NxHxWx3 uint8 RGB array."""
    if not isinstance(batch, np.ndarray):
        raise ValueError(f"batch must be a numpy array, got {type(batch).__name__}")
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3 or batch.shape[1] < 1 or batch.shape[2] < 1:
        raise ValueError(f"batch must be an NxHxWx3 uint8 RGB array, got shape {batch.shape} dtype {batch.dtype}")


@dataclass(frozen=True)
class ComModelSetting:
    """How ``comcloak train`` starts a transform-coding ComModel for a codec (``models.training``).

    Attributes:
        block: the coder's block size (JPEG 8, WebP's VP8 4).
        chroma_subsampling: 2 for 4:2:0 chroma, 1 for full-resolution chroma.
        init_quality: the IJG quality of the initial quantisation tables; None: calibrated on the training pairs.
        rescales: the codec changes the image's scale, which hides a later codec's block grid at the attack
            resolution: a chain holding it starts from the generic setting (``ComModelSetting()``).
    """

    block: int = 8
    chroma_subsampling: int = 1
    init_quality: int | None = None
    rescales: bool = False


class Codec(abc.ABC):
    """A real, lossy or lossless image transformation described by a canonical spec string.

    Codecs are immutable and hold no per-call state, so one instance may be shared across threads.
    """

    #: Whether ``apply`` always returns an image of the input's height and width.
    preserves_size: bool = True

    @property
    @abc.abstractmethod
    def spec(self) -> str:
        """Canonical spec string; ``parse_codec(c.spec) == c``."""

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of what ``apply`` returns for an input of this size."""
        return height, width

    @property
    def imitated(self) -> Codec:
        """The codec a stand-in imitates for this one: itself (a platform profile: the chain it stands for)."""
        return self

    @property
    def stand_in(self) -> str:
        """The stand-in spec (``--through``) that imitates this codec when no ComModel is shipped for its spec.

        What ``comodel:auto`` and the default ``through`` of ``--check`` pick; the generic JPEG-50 ComModel unless
        a codec declares a better one (``none`` for the identity, ``diffjpeg:Q`` for JPEG).
        """
        return defaults.THROUGH

    def comodel_setting(self) -> ComModelSetting:
        """How ``comcloak train`` starts a ComModel for this codec: the generic setting unless a codec declares one."""
        return ComModelSetting()

    @abc.abstractmethod
    def apply(self, image: np.ndarray) -> np.ndarray:
        """Encode one HxWx3 uint8 RGB image in memory and return the decoded HxWx3 uint8 RGB result."""

    def apply_batch(self, batch: np.ndarray) -> np.ndarray:
        """Apply the codec to every image of an NxHxWx3 uint8 batch, returning an N x H' x W' x 3 uint8 array.

        Every image of a batch has the same size, and every codec here (resize included) maps equal input
        sizes to equal output sizes, so the result is always one array, even for chains that resize.
        """
        check_batch(batch)
        if batch.shape[0] == 0:
            height, width = self.output_size(batch.shape[1], batch.shape[2])
            return np.empty((0, height, width, 3), dtype=np.uint8)
        return np.stack([self.apply(image) for image in batch])

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
