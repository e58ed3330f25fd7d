"""Block transforms of the attacker's view as pixel permutations (issue 26's transfer-boosting draws; docs/DESIGN.md
§2, the robust attack's step 4).

* BSR, block shuffle and rotation (Wang et al., CVPR 2024): the view cut into n x n square blocks, shuffled, each
  turned by a random multiple of 90 degrees (:func:`block_shuffle_index`).
* SIA, structure-invariant transforms (Wang et al., ICCV 2023): the view cut into n x n blocks, each transformed on
  its own, here by the transforms that only move pixels (:data:`SIA_TRANSFORMS`: flips, a half turn, circular
  shifts; :func:`structure_invariant_index`). The paper's others (scaling, noise, resizing, DCT dropout) change values
  or resample and are left out: a permutation's input gradient is the gather by its inverse, so the exported step
  needs neither Scatter nor a dense matrix.

A draw's transforms compose into one index map (S*S,) per draw: output pixel ``i`` is input pixel ``index[i]``
(:func:`permute_pixels`, ONNX ``GatherElements``).
"""

from __future__ import annotations

import torch

# SIA's per-block transforms that permute pixels, by number (``structure_invariant_index``'s ``kinds``).
SIA_TRANSFORMS = ("identity", "vertical flip", "horizontal flip", "half turn", "vertical roll", "horizontal roll")


def block_shuffle_index(view: int, blocks: int, order: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """The pixel permutation of BSR on an S x S view cut into ``blocks`` x ``blocks`` square blocks: output block
    ``k`` (row-major) is input block ``order[k]`` turned ``turns[k]`` quarter turns counter-clockwise.

    Args:
        view: S, the view's side (a multiple of ``blocks``).
        blocks: n, the grid's side.
        order: (B, n*n) int64, a permutation of the blocks per draw.
        turns: (B, n*n) int64 in 0..3.

    Returns:
        (B, S*S) int64: output pixel ``i`` (row-major) is input pixel ``index[i]``; each row a permutation.

    Example:
        >>> block_shuffle_index(4, 2, torch.tensor([[1, 0, 2, 3]]), torch.zeros(1, 4, dtype=torch.long))[0, :4]
        tensor([2, 3, 0, 1])
    """
    side = view // blocks
    rows = torch.arange(view, device=order.device)
    out_y, out_x = rows[:, None].expand(view, view).reshape(-1), rows[None, :].expand(view, view).reshape(-1)
    block = (out_y // side) * blocks + out_x // side  # (S*S,)
    u, v = out_y % side, out_x % side
    turn = turns[:, block]  # (B, S*S)
    last = side - 1
    # out[u, v] = in[u', v'] for k quarter turns: (u, v), (v, last - u), (last - u, last - v), (last - v, u).
    src_u = torch.where(turn == 0, u, torch.where(turn == 1, v, torch.where(turn == 2, last - u, last - v)))
    src_v = torch.where(turn == 0, v, torch.where(turn == 1, last - u, torch.where(turn == 2, last - v, u)))
    source = order[:, block]
    return ((source // blocks) * side + src_u) * view + (source % blocks) * side + src_v


def permute_pixels(views: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Views (B, C, S, S) with their pixels gathered by ``index`` (B, S*S) (exact integers, any float or int
    dtype): output pixel ``i`` is input pixel ``index[i]`` of every channel. A gather: ONNX ``GatherElements``."""
    batch, channels, height, width = views.shape
    # int64, as the exporter casts any index to; TensorRT's parser narrows INT64 to INT32 (values < 2**24 here)
    taps = index.long()[:, None, :].expand(batch, channels, height * width)
    return views.reshape(batch, channels, height * width).gather(2, taps).reshape(views.shape)


def structure_invariant_index(view: int, blocks: int, kinds: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """The pixel permutation of SIA's moving transforms on an S x S view cut into ``blocks`` x ``blocks`` blocks
    (boundaries ``round(k * S / n)``: any S, blocks of two sizes at most): block ``k`` (row-major) gets transform
    ``kinds[k]`` of :data:`SIA_TRANSFORMS`, a roll by ``shifts[k]`` times its height or width.

    Args:
        view: S, the view's side.
        blocks: n, the grid's side.
        kinds: (B, n*n) int64 in ``0..len(SIA_TRANSFORMS) - 1``.
        shifts: (B, n*n) float in [0, 1), the rolls' fraction of the block.

    Returns:
        (B, S*S) int64: output pixel ``i`` is input pixel ``index[i]``; each row a permutation.

    Example:
        >>> structure_invariant_index(4, 2, torch.tensor([[2, 0, 0, 0]]), torch.zeros(1, 4))[0, :4]
        tensor([1, 0, 2, 3])
    """
    edges = torch.tensor([round(k * view / blocks) for k in range(blocks + 1)], device=kinds.device)
    pixels = torch.arange(view, device=kinds.device)
    band = torch.bucketize(pixels, edges[1:], right=True)  # (S,): the block row (or column) of each pixel
    start, size = edges[band], (edges[1:] - edges[:-1])[band]
    local = pixels - start
    u, v = local[:, None].expand(view, view).reshape(-1), local[None, :].expand(view, view).reshape(-1)
    height, width = size[:, None].expand(view, view).reshape(-1), size[None, :].expand(view, view).reshape(-1)
    block = (band[:, None] * blocks + band[None, :]).reshape(-1)
    kind, shift = kinds[:, block], shifts[:, block]  # (B, S*S)
    flip_u = (kind == 1) | (kind == 3)
    flip_v = (kind == 2) | (kind == 3)
    src_u = torch.where(flip_u, height - 1 - u, u)
    src_v = torch.where(flip_v, width - 1 - v, v)
    src_u = torch.where(kind == 4, (src_u + (shift * height).long()) % height, src_u)
    src_v = torch.where(kind == 5, (src_v + (shift * width).long()) % width, src_v)
    rows = start[:, None].expand(view, view).reshape(-1)
    columns = start[None, :].expand(view, view).reshape(-1)
    return (rows + src_u) * view + columns + src_v
