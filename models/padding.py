"""TensorFlow/Keras "same" padding, made static so the models stay traceable by ``torch.fx``."""

from __future__ import annotations

from torch import nn


def same_padding(kernel: int, stride: int, size: int = 224) -> tuple[int, int]:
    """(before, after) padding TF/Keras "same" uses along one axis of length ``size``.

    TF rule: total = max(kernel - (size % stride or stride), 0), before = total // 2. For even kernels or strided
    convolutions it is asymmetric, the extra pixel going after (bottom/right): k4 s1 -> (1, 2), k3 s2 -> (0, 1).
    """
    total = max(kernel - (size % stride or stride), 0)
    return total // 2, total - total // 2


def same_pad_layer(kernel: int, stride: int, size: int = 224) -> tuple[nn.ZeroPad2d | None, int]:
    """Padding for a "same" conv as (explicit pad module or None, symmetric ``padding=`` for the conv itself).

    The padding is fixed at construction for an input of ``size`` (even sizes all pad alike), like the static-pad
    convolutions of the reference EfficientNet code; symmetric cases use the conv's own padding (fewer graph nodes).
    """
    before, after = same_padding(kernel, stride, size)
    if before == after:
        return None, before
    return nn.ZeroPad2d((before, after, before, after)), 0
